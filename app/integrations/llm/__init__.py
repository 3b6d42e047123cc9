"""Chat models behind one Protocol (`TextModel`), chosen by settings: `LLM_PROVIDER=openai|anthropic`
with that provider's key, base URL and model. Without the key there is no model (callers answer 503
provider_not_configured)."""

from __future__ import annotations

from app.config import Settings
from app.integrations.llm.base import LLMBadOutput, LLMError, LLMUnavailable, TextModel

__all__ = ["LLMBadOutput", "LLMError", "LLMUnavailable", "TextModel", "build_text_model"]


def build_text_model(settings: Settings) -> TextModel | None:
    """The configured model, or None when its provider has no API key. Each call builds a new client
    (with its own connection pool): build once per process and `aclose()` it at shutdown."""
    if settings.llm_provider == "anthropic":
        secret, base_url, model = (
            settings.anthropic_api_key,
            settings.anthropic_base_url,
            settings.llm_anthropic_model,
        )
    else:
        secret, base_url, model = settings.openai_api_key, settings.openai_base_url, settings.llm_openai_model
    key = secret.get_secret_value().strip() if secret is not None else ""
    if not key:
        return None
    # The SDKs are imported only when a model is configured: together they add ~58 MiB to every process.
    model_class: type[TextModel]
    if settings.llm_provider == "anthropic":
        from app.integrations.llm.anthropic_model import AnthropicTextModel

        model_class = AnthropicTextModel
    else:
        from app.integrations.llm.openai_model import OpenAITextModel

        model_class = OpenAITextModel
    return model_class(
        api_key=key,
        base_url=base_url,
        model=model,
        timeout_seconds=settings.llm_timeout_seconds,
        max_retries=settings.llm_max_retries,
        max_output_tokens=settings.llm_max_output_tokens,
    )
