"""Mailers: hand a composed message to an SMTP server, or write it to a directory.

:class:`SmtpMailer` keeps one connection for a batch (``with mailer: ...``) and reconnects
once when the server dropped it between messages. Every failure is a
:class:`DeliveryError` that says whether it is *temporary* (4xx replies, connection,
timeout and TLS problems, authentication and configuration errors that an operator can
fix: try again later) or *permanent* (5xx replies: do not retry), and whether the server
refused the recipient address itself (a 5xx on RCPT: a hard bounce).

:class:`FileMailer` is the development default (no ``LEADFLOW_SMTP_HOST``): each message
becomes ``<mail_dir>/<message-id>.eml``, written atomically.
"""

from __future__ import annotations

import contextlib
import os
import re
import smtplib
import ssl
import tempfile
from email.message import EmailMessage
from email.utils import getaddresses, parseaddr
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self

from leadflow.core import errors
from leadflow.settings import Settings


class DeliveryError(errors.UpstreamFailed):
    """The message was not accepted."""

    def __init__(
        self,
        message: str,
        *,
        temporary: bool,
        code: int | None = None,
        recipient_refused: bool = False,
    ) -> None:
        super().__init__(message)
        self.temporary = temporary
        self.code = code
        # The server refused the recipient address (RCPT) with a permanent error.
        self.hard_bounce = recipient_refused and not temporary


class Mailer(Protocol):
    def send(self, message: EmailMessage) -> None:
        """Hand the message over; raises :class:`DeliveryError` when it was not accepted."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> Mailer: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


def _reply_text(code: int, reply: bytes | str) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    return f"{code} {' '.join(text.split())}"[:500]


def _classify(code: int, reply: bytes | str, *, rcpt: bool = False) -> DeliveryError:
    return DeliveryError(
        _reply_text(code, reply),
        temporary=not 500 <= code <= 599,
        code=code,
        recipient_refused=rcpt,
    )


class _MailerBase:
    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:  # pragma: no cover - overridden
        return None


class NullMailer(_MailerBase):
    """Accepts every message and keeps nothing (no files, no network): the demo world's
    mailbox. Sends are still recorded in ``email_sends`` as with a real server."""

    def __init__(self) -> None:
        self.accepted = 0

    def send(self, message: EmailMessage) -> None:
        self.accepted += 1

    def close(self) -> None:
        return None


class SmtpMailer(_MailerBase):
    """SMTP with ``security`` none | starttls | ssl, AUTH when a user name is set."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        security: str = "starttls",
        username: str | None = None,
        password: str | None = None,
        timeout: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
        local_hostname: str | None = None,
    ) -> None:
        if security not in ("none", "starttls", "ssl"):
            raise ValueError("security must be none, starttls or ssl")
        self.host, self.port, self.security = host, port, security
        self.username, self.password = username, password
        self.timeout = timeout
        self.ssl_context = ssl_context or ssl.create_default_context()
        self.local_hostname = local_hostname
        self._smtp: smtplib.SMTP | None = None
        self.connections = 0  # how many connections were opened (reuse is observable)

    def _connect(self) -> smtplib.SMTP:
        smtp: smtplib.SMTP
        try:
            if self.security == "ssl":
                smtp = smtplib.SMTP_SSL(
                    self.host,
                    self.port,
                    timeout=self.timeout,
                    context=self.ssl_context,
                    local_hostname=self.local_hostname,
                )
            else:
                smtp = smtplib.SMTP(
                    self.host, self.port, timeout=self.timeout, local_hostname=self.local_hostname
                )
            try:
                smtp.ehlo()
                if self.security == "starttls":
                    smtp.starttls(context=self.ssl_context)
                    smtp.ehlo()
                if self.username:
                    smtp.login(self.username, self.password or "")
            except BaseException:
                smtp.close()
                raise
        except smtplib.SMTPAuthenticationError as exc:
            # Wrong credentials are a configuration problem: every message would fail the
            # same way, so the sends wait (temporary) until an operator fixes the settings.
            raise DeliveryError(
                f"SMTP authentication failed: {_reply_text(exc.smtp_code, exc.smtp_error)}",
                temporary=True,
                code=exc.smtp_code,
            ) from None
        except smtplib.SMTPNotSupportedError as exc:
            raise DeliveryError(
                f"SMTP server at {self.host}:{self.port}: {exc} (check LEADFLOW_SMTP_SECURITY)",
                temporary=True,
            ) from None
        except smtplib.SMTPResponseException as exc:
            raise DeliveryError(
                f"SMTP server at {self.host}:{self.port} refused the session: "
                f"{_reply_text(exc.smtp_code, exc.smtp_error)}",
                temporary=True,
                code=exc.smtp_code,
            ) from None
        except (OSError, smtplib.SMTPException) as exc:
            raise DeliveryError(
                f"cannot reach SMTP server {self.host}:{self.port}: "
                f"{exc.__class__.__name__}: {exc}",
                temporary=True,
            ) from None
        self.connections += 1
        return smtp

    def send(self, message: EmailMessage) -> None:
        sender = parseaddr(str(message["From"] or ""))[1]
        recipients = [addr for _, addr in getaddresses([str(v) for v in message.get_all("To", [])])]
        if not recipients:
            raise DeliveryError("message has no recipient", temporary=False)
        reused = self._smtp is not None
        if self._smtp is None:
            self._smtp = self._connect()
        try:
            self._send_on(self._smtp, message, sender, recipients)
        except (smtplib.SMTPServerDisconnected, ConnectionError) as exc:
            self._drop()
            if not reused:
                raise DeliveryError(
                    f"SMTP connection lost: {exc.__class__.__name__}: {exc}", temporary=True
                ) from None
            # The server closed an idle connection between two messages: one new try.
            self._smtp = self._connect()
            try:
                self._send_on(self._smtp, message, sender, recipients)
            except (smtplib.SMTPServerDisconnected, OSError) as again:
                self._drop()
                raise DeliveryError(
                    f"SMTP connection lost: {again.__class__.__name__}: {again}",
                    temporary=True,
                ) from None

    def _send_on(
        self, smtp: smtplib.SMTP, message: EmailMessage, sender: str, recipients: list[str]
    ) -> None:
        try:
            refused = smtp.send_message(message, from_addr=sender, to_addrs=recipients)
        except smtplib.SMTPRecipientsRefused as exc:
            code, reply = next(iter(exc.recipients.values()))
            raise _classify(code, reply, rcpt=True) from None
        except smtplib.SMTPSenderRefused as exc:
            raise _classify(exc.smtp_code, exc.smtp_error) from None
        except smtplib.SMTPServerDisconnected:
            raise
        except smtplib.SMTPResponseException as exc:  # DATA refused, and others
            self._reset()
            raise _classify(exc.smtp_code, exc.smtp_error) from None
        except (smtplib.SMTPException, TimeoutError, ssl.SSLError) as exc:
            self._drop()
            raise DeliveryError(
                f"SMTP error: {exc.__class__.__name__}: {exc}", temporary=True
            ) from None
        if refused:  # several recipients, some refused: we send one recipient per message
            code, reply = next(iter(refused.values()))
            raise _classify(code, reply, rcpt=True)

    def _reset(self) -> None:
        if self._smtp is None:
            return
        try:
            self._smtp.rset()
        except (smtplib.SMTPException, OSError):
            self._drop()

    def _drop(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            with contextlib.suppress(OSError):
                smtp.close()

    def close(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is None:
            return
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            smtp.close()


_UNSAFE_FILE_CHARS = re.compile(r"[^A-Za-z0-9._@+-]")


class FileMailer(_MailerBase):
    """Writes each message to ``<directory>/<message-id>.eml`` (development, no SMTP)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def path_for(self, message: EmailMessage) -> Path:
        message_id = str(message["Message-ID"] or "").strip().strip("<>")
        name = _UNSAFE_FILE_CHARS.sub("_", message_id)[:200].lstrip(".")
        if not name:
            raise DeliveryError("message has no Message-ID", temporary=False)
        return self.directory / f"{name}.eml"

    def send(self, message: EmailMessage) -> None:
        target = self.path_for(message)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".", suffix=".tmp")
            with os.fdopen(fd, "wb") as out:
                out.write(message.as_bytes())
            os.replace(tmp, target)
        except OSError as exc:
            raise DeliveryError(
                f"cannot write {target}: {exc.strerror or exc}", temporary=True
            ) from None

    def close(self) -> None:
        return None


def build_mailer(settings: Settings) -> SmtpMailer | FileMailer:
    """SMTP when ``smtp_host`` is set, otherwise .eml files in ``mail_dir``."""
    if settings.smtp_host is None:
        return FileMailer(settings.mail_dir)
    return SmtpMailer(
        settings.smtp_host,
        settings.smtp_port,
        security=settings.smtp_security,
        username=settings.smtp_username,
        password=settings.smtp_password,
        timeout=settings.smtp_timeout,
    )
