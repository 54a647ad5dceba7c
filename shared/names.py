"""Function names that one blueprint uses to reach another's functions (orchestrators, activities).

The registration test checks that every name here is a registered function, so a rename cannot silently
break the coupling between blueprints.
"""

from typing import Final

NOTIFY_ORCHESTRATOR: Final = "notify_mssp"
LIST_PENDING_TENANTS_ACTIVITY: Final = "list_pending_tenants"
ONBOARDING_RESULT_ORCHESTRATOR: Final = "notify_onboarding_result"
POST_ONBOARDING_RESULT_ACTIVITY: Final = "post_onboarding_result"
PURGE_TENANT_ORCHESTRATOR: Final = "purge_tenant_alerts"
PURGE_ALERTS_BATCH_ACTIVITY: Final = "purge_tenant_alerts_batch"
NOTIFY_RUN_CONFIG_ACTIVITY: Final = "notification_run_config"
PLAN_TENANT_ACTIVITY: Final = "plan_tenant_notifications"
SEND_BATCH_ORCHESTRATOR: Final = "send_notification_batch"
TENANT_GROUP_ORCHESTRATOR: Final = "notify_tenant_group"
SEND_EMAILS_ACTIVITY: Final = "send_notification_emails"
MARK_SENT_ACTIVITY: Final = "mark_notifications_sent"
COMPLETE_TENANT_ACTIVITY: Final = "complete_tenant_notifications"
