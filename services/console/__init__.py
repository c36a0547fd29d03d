"""The staff console at /console/: server-rendered pages (Jinja2, htmx from static/) for reviewers, finance
staff and administrators, calling the same services the API's routes call, with the same access rules."""
