"""The function app: one blueprint per feature folder, nothing else (docs/ARCHITECTURE.md, "Layout")."""

import azure.functions as func

import fetch_alerts
import grant_access
import notify_mssp

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
for blueprint in (grant_access.bp, fetch_alerts.bp, notify_mssp.bp):
    app.register_functions(blueprint)
