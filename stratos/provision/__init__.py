"""Provisioning the chosen server: launch it, start its Prefect worker there, tear it down.

    row = server_row(server_id, spec.servers.catalog_paths())   # the catalog row, cloud's own names
    check_launchable(row, spec.provision)                        # unknown cloud, ... before any launch
    task = sky_task(row, spec.provision, pool, api_url, run_name)  # SkyPilot task pinned to the row
    record = launcher.launch(cluster_name(run_name, row.id), task)  # LocalLauncher or SkyLauncher
    ...
    launcher.down(record.name)                                   # in a finally

Launchers: `SkyLauncher` drives SkyPilot in its own venv (stratos/provision/sky.py); `LocalLauncher`
runs the same task's worker job on this machine, the stand-in for tests. Every launch is recorded
under $STRATOS_HOME/clusters/ (clusters.py) before it starts, which `stratos clusters` lists and
`stratos down` tears down.
"""
