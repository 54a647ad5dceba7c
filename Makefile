# Two commands on a fresh machine (Debian, python3.11, node 20 + npm, make):
#   make run    set everything up and run the product against the local platform
#   make test   set everything up and run the test suite
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP_PY := $(VENV)/.installed
STAMP_NODE := node_modules/.installed
ARGS ?=
# checkov for tests/infra lives in its own venv: its pins (packaging<24) conflict with pytest 9.
INFRA_VENV ?= .local/infra-venv
STAMP_INFRA := $(INFRA_VENV)/.installed
# Debian's Chromium drives the browser test of `make test` (Playwright with executable_path; no browser download).
CHROMIUM := /usr/bin/chromium

.PHONY: setup run test bench lint clean deploy deploy-preview _azure-tools

setup: $(STAMP_PY) $(STAMP_NODE)

# Debian's python3.11 needs python3.11-venv for `-m venv`; install it when venv creation fails.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_INSTALL = $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq

$(STAMP_PY): requirements.txt requirements-dev.txt requirements-infra.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) 2>/dev/null || { rm -rf $(VENV); \
		$(APT_INSTALL) python3.11-venv && $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $@

$(STAMP_NODE): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

$(CHROMIUM):
	$(APT_INSTALL) chromium

run: setup
	$(PY) -m local.run $(ARGS)

# Workers for the suite (pytest-xdist, whole modules per worker so a module's services start once). Three on two
# cores: most of the suite's time is spent waiting for the services it starts (ticks, retries, rate windows).
TEST_WORKERS ?= 3
test: setup $(CHROMIUM) $(STAMP_INFRA)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile $(ARGS)

bench: setup
	$(PY) -m local.bench $(ARGS)

# Style and types of the product: ruff over the repository, mypy over the folders pyproject.toml's [tool.mypy] names.
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/python -m mypy

clean:
	rm -rf $(VENV) node_modules .local .pytest_cache .ruff_cache

# --- checkov for tests/infra, in its own venv (its pins conflict with pytest 9) ---------------------------
$(STAMP_INFRA): infra/checkov-requirements.txt requirements-infra.txt
	@test -x $(INFRA_VENV)/bin/python || $(PYTHON) -m venv $(INFRA_VENV)
	$(INFRA_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r infra/checkov-requirements.txt
	$(INFRA_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-infra.txt
	@touch $@

# --- Azure (infra/README.md) ------------------------------------------------------------------------------
#   make deploy-preview RG=<group>                 az bicep build + what-if
#   make deploy RG=<group> [LOCATION=<region>]     az deployment group create, then func publish
RG ?=
LOCATION ?=
AZURE_ENV_NAME ?= msspalerts
DEPLOYMENT ?= mssp-alerts
AZ_DEPLOY_ARGS = --resource-group "$(RG)" --template-file infra/main.bicep --parameters infra/main.bicepparam

_azure-tools:
	@command -v az >/dev/null 2>&1 || { echo "deploy: the Azure CLI (az) is not installed: https://aka.ms/installazurecli" >&2; exit 1; }
	@test -n "$(RG)" || { echo "deploy: set RG=<resource group> (and LOCATION=<region> to create it)" >&2; exit 1; }

# Who deploys, for main.bicep's deployerPrincipalId (Key Vault Secrets Officer on the vault): the signed-in user, or
# the service principal `az login --service-principal` signed in as.
AZURE_DEPLOYER = if id=$$(az ad signed-in-user show --query id --output tsv 2>/dev/null) && [ -n "$$id" ]; then \
		export AZURE_PRINCIPAL_ID=$$id AZURE_PRINCIPAL_TYPE=User; \
	else \
		export AZURE_PRINCIPAL_ID=$$(az ad sp show --id "$$(az account show --query user.name --output tsv)" --query id --output tsv) \
			AZURE_PRINCIPAL_TYPE=ServicePrincipal; \
	fi

# Role assignments made by the deployment take minutes to reach storage and Key Vault, and until then the publish
# (the package goes to the container as the app's identity) and the vault calls answer 403. `retry <command>` runs a
# command and, while it fails with an authorization error, runs it again after AZURE_RETRY_WAIT seconds, at most
# AZURE_RETRY_TRIES times in all; any other failure stops at once.
AZURE_RETRY_TRIES ?= 10
AZURE_RETRY_WAIT ?= 30
AZURE_RETRY = retry() { \
	log=$$(mktemp); \
	for try in $$(seq 1 $(AZURE_RETRY_TRIES)); do \
		"$$@" 2>&1 | tee "$$log"; status=$${PIPESTATUS[0]}; \
		if [ "$$status" = 0 ]; then rm -f "$$log"; return 0; fi; \
		if ! grep -Eqi '403|Forbidden|AuthorizationPermissionMismatch|AuthorizationFailed|not authorized' "$$log"; then \
			rm -f "$$log"; return "$$status"; \
		fi; \
		if [ "$$try" -lt $(AZURE_RETRY_TRIES) ]; then \
			echo "deploy: not authorized yet (try $$try of $(AZURE_RETRY_TRIES)): new role assignments are still spreading; again in $(AZURE_RETRY_WAIT) s" >&2; \
			sleep $(AZURE_RETRY_WAIT); \
		fi; \
	done; \
	rm -f "$$log"; echo "deploy: still not authorized after $(AZURE_RETRY_TRIES) tries: check the role assignments (infra/README.md)" >&2; \
	return 1; }

deploy-preview: _azure-tools
	az bicep build --file infra/main.bicep --stdout >/dev/null
	@$(AZURE_DEPLOYER); set -x; \
	AZURE_ENV_NAME=$(AZURE_ENV_NAME) az deployment group what-if $(AZ_DEPLOY_ARGS)

deploy: _azure-tools
	@command -v func >/dev/null 2>&1 || { echo "deploy: Azure Functions Core Tools v4 (func) is not installed: https://aka.ms/func-install" >&2; exit 1; }
	@if [ -n "$(LOCATION)" ]; then az group create --name "$(RG)" --location "$(LOCATION)" --output none; fi
	@$(AZURE_DEPLOYER); set -x; \
	AZURE_ENV_NAME=$(AZURE_ENV_NAME) az deployment group create --name "$(DEPLOYMENT)" $(AZ_DEPLOY_ARGS) --output none
	@set -o pipefail; $(AZURE_RETRY); \
	app=$$(az deployment group show --resource-group "$(RG)" --name "$(DEPLOYMENT)" \
		--query properties.outputs.AZURE_FUNCTION_APP_NAME.value --output tsv) && test -n "$$app" \
		|| { echo "deploy: deployment $(DEPLOYMENT) has no AZURE_FUNCTION_APP_NAME output" >&2; exit 1; }; \
	kv=$$(az deployment group show --resource-group "$(RG)" --name "$(DEPLOYMENT)" \
		--query properties.outputs.KEY_VAULT_NAME.value --output tsv) || exit 1; \
	found=$$(retry az keyvault secret list --vault-name "$$kv" --query "length([?name=='siem-token-key'])" --output tsv | tail -n 1) \
		|| exit 1; \
	if [ "$$found" != 1 ]; then \
		echo "deploy: creating siem-token-key in $$kv"; \
		retry az keyvault secret set --vault-name "$$kv" --name siem-token-key --output none \
			--value "$$($(PYTHON) -c 'import secrets; print(secrets.token_hex(32))')" || exit 1; \
	fi; \
	retry func azure functionapp publish "$$app" --python
