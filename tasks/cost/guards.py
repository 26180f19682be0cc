"""aws-nuke's account guard: the duty touches an AWS account only when its id is allowed, and an
account whose alias contains a blocked term (default `prod`) only when that alias is allowed too."""

from __future__ import annotations

from collections.abc import Collection

from tasks.cost.aws import AwsScope


def account_identity(scope: AwsScope) -> tuple[str, list[str]]:
    """(account id, aliases) of the credentials in use (STS, then IAM; no aliases when IAM says no)."""
    account = str(scope.client("sts").get_caller_identity()["Account"])
    try:
        aliases = list(scope.client("iam").list_account_aliases().get("AccountAliases") or [])
    except Exception:  # no iam:ListAccountAliases permission: judged by the id alone
        aliases = []
    return account, aliases


def refusal(
    account: str,
    aliases: Collection[str],
    allowed_accounts: Collection[str],
    blocked_terms: Collection[str],
    allowed_aliases: Collection[str] = (),
) -> str | None:
    """Why this account must not be touched, or None when it may be."""
    if account not in allowed_accounts:
        return f"AWS account {account} is not in SCALEOPS_COST__ALLOWED_ACCOUNTS: no AWS policy ran"
    for alias in aliases:
        term = next((t for t in blocked_terms if t and t.lower() in alias.lower()), None)
        if term and alias not in allowed_aliases:
            return (
                f"AWS account {account} has the alias {alias!r}, which contains the blocked term {term!r}: "
                "no AWS policy ran (list the alias in SCALEOPS_COST__ALLOWED_ALIASES to allow it)"
            )
    return None
