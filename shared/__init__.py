"""Code shared by the three blueprints: settings, table storage, names, run ids, Microsoft access (identity,
typed errors, access checks), the Microsoft clients and the alert model."""

import logging

# azure-core logs every request's headers at INFO; with the Functions default level that floods the logs
# (and Application Insights) with one entry per storage call. Warnings and errors still come through.
logging.getLogger("azure.core.pipeline.policies.http_logging_policy").setLevel(logging.WARNING)
