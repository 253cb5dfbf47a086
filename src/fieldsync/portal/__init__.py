"""The maker portal: tables, apps, offline profiles, members, sync errors and devices in
the browser, under ``/portal`` of ``fieldsync serve``."""
