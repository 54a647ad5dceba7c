"""The local Microsoft cloud: Entra ID, Microsoft Graph and Defender for Endpoint over HTTPS on loopback.

Never deployed. Run it with ``python -m local.cloud --port N --state-dir DIR`` (local/PLATFORM.md);
set it up and read ground truth through the control API documented in ``local.cloud.control``.
"""
