"""Which chat model to call and how patiently, from configuration.

| setting | environment variable | default |
|---|---|---|
| `base_url` | `OPENAI_BASE_URL` | unset (OpenAI's own API when only a key is set) |
| `api_key` | `OPENAI_API_KEY` | unset (local servers such as Ollama or llama.cpp need none) |
| `model` | `SELFHEAL_MODEL` | `gpt-4o-mini` |

Everything else (timeouts, retries, prices) is set in code or through `from_env(**overrides)`. The key is a
`SecretStr`: it never appears in a repr, a log line or an error message.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from tools.env import env_values

DEFAULT_MODEL = "gpt-4o-mini"
OPENAI_API_URL = "https://api.openai.com/v1"

ENV_VARS: dict[str, str] = {
    "base_url": "OPENAI_BASE_URL",
    "api_key": "OPENAI_API_KEY",
    "model": "SELFHEAL_MODEL",
}


class LLMConfigError(ValueError):
    """The environment names an LLM endpoint or model that cannot be used; the message says which and why."""


class LLMConfig(BaseModel):
    """Endpoint, model, retry budget and prices of the responder's chat model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_url: str | None = Field(
        None, description="OpenAI-compatible API root, e.g. http://localhost:11434/v1"
    )
    api_key: SecretStr | None = Field(None, description="bearer key; never logged")
    model: str = Field(DEFAULT_MODEL, min_length=1, description="model name the endpoint knows")
    temperature: float = Field(0.0, ge=0, le=2, description="0 so that the same incident gets the same plan")
    timeout_s: float = Field(30.0, gt=0, description="connect/read/write timeout of one request")
    max_attempts: int = Field(4, ge=1, le=10, description="requests per call, the first included")
    backoff_initial_s: float = Field(0.5, ge=0, description="wait before the second attempt; doubles after")
    backoff_max_s: float = Field(8.0, ge=0, description="cap on any one wait, Retry-After included")
    backoff_jitter_s: float = Field(
        0.25, ge=0, description="random extra wait so clients do not retry in step"
    )
    prompt_price_per_1k: float = Field(0.0, ge=0, description="USD per 1000 prompt tokens; 0 when unknown")
    completion_price_per_1k: float = Field(
        0.0, ge=0, description="USD per 1000 completion tokens; 0 when unknown"
    )

    @field_validator("base_url", "api_key", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        # `export OPENAI_API_KEY=` means "no key", not "send an empty bearer token".
        if isinstance(value, str):
            return value.strip() or None
        return value

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        # Checked whole here: a URL the HTTP client cannot parse (a bad port, an unclosed "[") used to pass
        # and raise httpx's InvalidURL on the first request, which no caller expects, mid-investigation.
        try:
            parts = urlsplit(value)
            usable = parts.scheme in ("http", "https") and bool(parts.hostname)
            parts.port  # noqa: B018  # raises ValueError for a port that is not a number in 0-65535
        except ValueError:
            usable = False
        if not usable:
            raise ValueError("must be an http(s) URL with a host, such as http://localhost:11434/v1")
        return value.rstrip("/")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> LLMConfig:
        """Settings from environment variables (`os.environ` unless `env` is given), then `overrides`.

        Raises:
            LLMConfigError: A setting cannot be used; the message names its variable (a command prints it
                as an error, not as pydantic's traceback).
        """
        values = {**env_values(ENV_VARS, env), **overrides}
        try:
            return cls.model_validate(values)
        except ValidationError as error:
            problems = []
            for problem in error.errors():
                field = str(problem["loc"][0]) if problem["loc"] else ""
                name = field if field in overrides else ENV_VARS.get(field, field)
                # The value is quoted so a typo shows, except the key's: it is never printed.
                shown = f"={values[field]!r}" if field in values and field != "api_key" else ""
                problems.append(f"{name}{shown}: {str(problem['msg']).removeprefix('Value error, ')}")
            raise LLMConfigError("the LLM settings cannot be used: " + "; ".join(problems)) from None

    @property
    def configured(self) -> bool:
        """True when an endpoint was chosen (a base URL or a key): only then may the responder ask a model."""
        return self.base_url is not None or self.api_key is not None

    @property
    def endpoint(self) -> str:
        """The API root requests go to: the configured URL, else OpenAI's."""
        return self.base_url or OPENAI_API_URL

    def cost_usd(self, prompt_tokens: int, completion_tokens: int) -> float:
        """What a call with these token counts cost at the configured prices."""
        return (
            prompt_tokens * self.prompt_price_per_1k + completion_tokens * self.completion_price_per_1k
        ) / 1000.0
