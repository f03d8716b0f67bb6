"""Which pagers run, from configuration: nothing leaves the machine unless it is configured.

| setting | environment variable | effect |
|---|---|---|
| `pagerduty_routing_key` | `SELFHEAL_PAGERDUTY_ROUTING_KEY` | enables PagerDuty (Events API v2) |
| `pagerduty_url` | `SELFHEAL_PAGERDUTY_URL` | the events endpoint; only contacted with a routing key |
| `slack_webhook_url` | `SELFHEAL_SLACK_WEBHOOK_URL` | enables Slack (incoming webhook) |
| `webhook_url` | `SELFHEAL_WEBHOOK_URL` | enables the generic JSON webhook |

The outbox (the `pages` table) and the console pager always run. Keys and webhook URLs are secrets: they
are `SecretStr` here and never appear in a repr, a log line or an error.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import datetime

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from store import Store
from tools.env import env_values
from tools.pagers.base import Pager
from tools.pagers.console import ConsolePager
from tools.pagers.outbox import OutboxPager
from tools.pagers.pagerduty import DEFAULT_EVENTS_URL, PagerDutyPager
from tools.pagers.slack import SlackPager
from tools.pagers.transport import RetryPolicy
from tools.pagers.webhook import WebhookPager

ENV_VARS: dict[str, str] = {
    "pagerduty_routing_key": "SELFHEAL_PAGERDUTY_ROUTING_KEY",
    "pagerduty_url": "SELFHEAL_PAGERDUTY_URL",
    "slack_webhook_url": "SELFHEAL_SLACK_WEBHOOK_URL",
    "webhook_url": "SELFHEAL_WEBHOOK_URL",
}


class PagerConfig(BaseModel):
    """Where pages go. Every remote channel is off until its key or URL is set."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pagerduty_routing_key: SecretStr | None = Field(None, description="Events API v2 integration key")
    pagerduty_url: str = Field(DEFAULT_EVENTS_URL, description="Events API v2 endpoint")
    slack_webhook_url: SecretStr | None = Field(None, description="Slack incoming webhook URL")
    webhook_url: SecretStr | None = Field(None, description="generic JSON webhook URL")
    console: bool = Field(True, description="also print pages to standard error")
    retry: RetryPolicy = Field(default_factory=RetryPolicy)

    @field_validator("pagerduty_routing_key", "slack_webhook_url", "webhook_url", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        # `export SELFHEAL_SLACK_WEBHOOK_URL=` means "off", not "post to the empty URL".
        if isinstance(value, str) and not value.strip():
            return None
        return value.strip() if isinstance(value, str) else value

    @field_validator("pagerduty_url", "slack_webhook_url", "webhook_url")
    @classmethod
    def _http_url(cls, value: str | SecretStr | None) -> str | SecretStr | None:
        text = value.get_secret_value() if isinstance(value, SecretStr) else value
        if text is not None and not text.startswith(("https://", "http://")):
            raise ValueError("must be an http(s) URL")
        return value

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> PagerConfig:
        """Settings from environment variables (`os.environ` unless `env` is given), then `overrides`."""
        return cls.model_validate({**env_values(ENV_VARS, env), **overrides})

    @property
    def channels(self) -> list[str]:
        """The remote channels that are configured (what would leave the machine)."""
        configured = [
            ("pagerduty", self.pagerduty_routing_key),
            ("slack", self.slack_webhook_url),
            ("webhook", self.webhook_url),
        ]
        return [name for name, secret in configured if secret is not None]


def build_pagers(
    config: PagerConfig,
    store: Store,
    *,
    clock: Callable[[], datetime] | None = None,
    transport: httpx.BaseTransport | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> list[Pager]:
    """The outbox and the console always, then each configured remote pager; the outbox comes first."""
    pagers: list[Pager] = [OutboxPager(store, clock=clock)]
    if config.console:
        pagers.append(ConsolePager())
    if config.pagerduty_routing_key is not None:
        pagers.append(
            PagerDutyPager(
                config.pagerduty_routing_key.get_secret_value(),
                url=config.pagerduty_url,
                policy=config.retry,
                transport=transport,
                sleep=sleep,
            )
        )
    if config.slack_webhook_url is not None:
        pagers.append(
            SlackPager(
                config.slack_webhook_url.get_secret_value(),
                policy=config.retry,
                transport=transport,
                sleep=sleep,
            )
        )
    if config.webhook_url is not None:
        pagers.append(
            WebhookPager(
                config.webhook_url.get_secret_value(), policy=config.retry, transport=transport, sleep=sleep
            )
        )
    return pagers
