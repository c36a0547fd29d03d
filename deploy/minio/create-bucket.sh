#!/bin/sh
# One-shot (the `minio-setup` compose service, minio/mc image): creates the documents bucket and the
# application's own MinIO user, allowed only that bucket, so the api and the worker never hold the root
# credentials. Idempotent: safe on every `docker compose up`; re-running it also resets the user's secret
# to the one in .env.
set -eu

: "${MINIO_ROOT_USER:?set MINIO_ROOT_USER}"
: "${MINIO_ROOT_PASSWORD:?set MINIO_ROOT_PASSWORD}"
: "${S3_BUCKET:?set S3_BUCKET}"
: "${S3_ACCESS_KEY_ID:?set S3_ACCESS_KEY_ID}"
: "${S3_SECRET_ACCESS_KEY:?set S3_SECRET_ACCESS_KEY}"

attempt=1
until mc alias set local "${MINIO_URL:-http://minio:9000}" "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null 2>&1; do
    if [ "$attempt" -ge 30 ]; then
        echo "MinIO did not answer" >&2
        exit 1
    fi
    attempt=$((attempt + 1))
    sleep 2
done

mc mb --ignore-existing "local/$S3_BUCKET"
# Documents are private: no anonymous access, whatever was set before.
mc anonymous set none "local/$S3_BUCKET"

policy=/tmp/giantflow-documents.json
cat >"$policy" <<JSON
{
  "Version": "2012-10-17",
  "Statement": [
    {"Effect": "Allow", "Action": ["s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads"],
     "Resource": ["arn:aws:s3:::$S3_BUCKET"]},
    {"Effect": "Allow",
     "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload",
                "s3:ListMultipartUploadParts"],
     "Resource": ["arn:aws:s3:::$S3_BUCKET/*"]}
  ]
}
JSON
mc admin policy create local giantflow-documents "$policy"
mc admin user add local "$S3_ACCESS_KEY_ID" "$S3_SECRET_ACCESS_KEY"
mc admin policy attach local giantflow-documents --user "$S3_ACCESS_KEY_ID" 2>/dev/null \
    || echo "minio-setup: policy already attached"
echo "minio-setup: bucket $S3_BUCKET and user $S3_ACCESS_KEY_ID ready"
