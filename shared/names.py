"""Function names that one blueprint uses to reach another's functions (orchestrators, activities).

The registration test checks that every name here is a registered function, so a rename cannot silently
break the coupling between blueprints.
"""

from typing import Final

NOTIFY_ORCHESTRATOR: Final = "notify_mssp"
LIST_PENDING_TENANTS_ACTIVITY: Final = "list_pending_tenants"
