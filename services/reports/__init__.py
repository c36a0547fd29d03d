"""Reports a bureau can publish: the cohort report of a program and batch over both domains, and the
three-year cultivation plans it is measured against (issue 19)."""
