#!/usr/bin/env bash
# Infrastructure checks run by `make test`: the SAM template and the GitHub workflows.
#
#   sam validate --lint     SAM transform + cfn-lint rules on the transformed template
#   cfn-lint template.yaml  the same linter on the untransformed file (catches SAM-level mistakes)
#   checkov                 security scan (CloudFormation framework, offline); zero failed checks.
#                           Every skip is justified next to its resource in template.yaml.
#   actionlint              .github/workflows/*.yml; when actionlint is not installed, the workflows
#                           are validated against the GitHub workflow JSON schema (check-jsonschema's
#                           vendored copy, offline) instead.
#
# Tool paths come from the environment so the Makefile can point at the venvs (checkov's pins
# conflict with sam-cli's, so it lives in its own venv): SAM, CFN_LINT, CHECKOV, ACTIONLINT,
# CHECK_JSONSCHEMA. Each defaults to the command of that name on PATH. A missing tool is an error,
# never a silent skip.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

SAM="${SAM:-sam}"
CFN_LINT="${CFN_LINT:-cfn-lint}"
CHECKOV="${CHECKOV:-checkov}"
ACTIONLINT="${ACTIONLINT:-actionlint}"
# check-jsonschema ships next to checkov (requirements-checkov.txt) unless told otherwise.
if [[ -z "${CHECK_JSONSCHEMA:-}" && -x "$(dirname "$CHECKOV")/check-jsonschema" ]]; then
    CHECK_JSONSCHEMA="$(dirname "$CHECKOV")/check-jsonschema"
fi
CHECK_JSONSCHEMA="${CHECK_JSONSCHEMA:-check-jsonschema}"
TEMPLATE="${TEMPLATE:-template.yaml}"

# sam validate needs a region even offline; it never calls AWS with --lint.
export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}"
export AWS_REGION="${AWS_REGION:-$AWS_DEFAULT_REGION}"
# Keep sam from asking about / sending telemetry in CI.
export SAM_CLI_TELEMETRY=0

failures=0
step() { printf '\n==> %s\n' "$*"; }
have() { command -v "$1" >/dev/null 2>&1; }
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }

need() {
    local var=$1 tool=$2
    if ! have "$tool"; then
        echo "lint-infra: '$tool' not found (set $var to its path)" >&2
        exit 2
    fi
}

need SAM "$SAM"
need CFN_LINT "$CFN_LINT"
need CHECKOV "$CHECKOV"

step "sam validate --lint ($TEMPLATE)"
"$SAM" validate --lint --template-file "$TEMPLATE" || fail "sam validate --lint"

step "cfn-lint $TEMPLATE"
"$CFN_LINT" "$TEMPLATE" || fail "cfn-lint"

step "checkov (cloudformation, offline)"
# --skip-download: no Bridgecrew/Prisma API calls; the bundled policies are used.
"$CHECKOV" -f "$TEMPLATE" --framework cloudformation --skip-download --quiet --compact \
    || fail "checkov"

workflows=(.github/workflows/*.yml)
if [[ ! -e "${workflows[0]}" ]]; then
    fail "no workflow files under .github/workflows"
elif have "$ACTIONLINT"; then
    step "actionlint ${workflows[*]}"
    "$ACTIONLINT" "${workflows[@]}" || fail "actionlint"
elif have "$CHECK_JSONSCHEMA"; then
    step "workflow schema check (actionlint not installed) ${workflows[*]}"
    "$CHECK_JSONSCHEMA" --builtin-schema vendor.github-workflows "${workflows[@]}" \
        || fail "workflow schema check"
else
    echo "lint-infra: neither '$ACTIONLINT' nor '$CHECK_JSONSCHEMA' found (set ACTIONLINT or CHECK_JSONSCHEMA)" >&2
    exit 2
fi

if ((failures > 0)); then
    echo "lint-infra: $failures check(s) failed" >&2
    exit 1
fi
echo "lint-infra: all checks passed"
