"""AccountNotices as structured log events, for a mail relay or an operator to pick up:
the default when no mailer is wired. An event names the account, never its email or
anything secret."""

from __future__ import annotations

import structlog

from keyhold.domain.identity.users import User

log = structlog.get_logger(__name__)


class LoggedAccountNotices:
    async def sign_up_with_existing_email(self, user: User) -> None:
        log.info("account_notice", notice="sign_up_with_existing_email", user=user.name)
