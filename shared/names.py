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
