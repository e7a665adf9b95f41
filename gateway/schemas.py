"""Request bodies: OpenAI's fields that pass through, and the translation and admin calls.

/v1/completions and /v1/chat/completions take OpenAI's sampling fields and vLLM's sampling
extensions (VLLM_SAMPLING: passed as given to the version's server; a remote server that is not
vLLM may refuse them, and its 400 reaches the client). Any other field is refused (400,
"Unrecognized request argument supplied: NAME"), as OpenAI does: a field that would be silently
dropped is a setting the client believes in and does not get. Fields that would change the
answer's shape in a way Baton does not relay (n > 1, echo, logprobs, tools) are refused too.
"""
from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from admin.accounts import Role
from engine import ShadowStats

TokenIds = list[Annotated[int, Field(ge=0)]]

# vLLM's sampling extensions (its SamplingParams, as its OpenAI server takes them), passed through.
VLLM_SAMPLING = ("top_k", "min_p", "repetition_penalty", "length_penalty", "min_tokens", "ignore_eos",
                 "stop_token_ids", "include_stop_str_in_output", "skip_special_tokens",
                 "spaces_between_special_tokens", "truncate_prompt_tokens", "bad_words", "allowed_token_ids",
                 "structured_outputs")
# OpenAI's own sampling fields besides those the engine merges with a version's defaults.
OPENAI_SAMPLING = ("seed", "presence_penalty", "frequency_penalty", "logit_bias", "response_format")


class SamplingFields(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    max_tokens: int | None = Field(None, ge=1, le=32768)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    user: str | None = Field(None, max_length=256)  # sticky canary side, like a chat conversation
    n: Literal[1] = 1
    logprobs: Literal[None, False] = None
    tools: None = None
    logit_bias: dict[str, Annotated[float, Field(ge=-100, le=100)]] | None = Field(None, max_length=300)
    response_format: dict[str, Any] | None = None  # json_object or json_schema: vLLM's structured output
    # vLLM's extensions (https://docs.vllm.ai/en/latest/serving/openai_compatible_server.html#extra-parameters)
    top_k: int | None = Field(None, ge=-1)
    min_p: float | None = Field(None, ge=0, le=1)
    repetition_penalty: float | None = Field(None, gt=0, le=2)
    length_penalty: float | None = None
    min_tokens: int | None = Field(None, ge=0, le=32768)
    ignore_eos: bool | None = None
    stop_token_ids: TokenIds | None = Field(None, max_length=64)
    include_stop_str_in_output: bool | None = None
    skip_special_tokens: bool | None = None
    spaces_between_special_tokens: bool | None = None
    truncate_prompt_tokens: int | None = Field(None, ge=-1)
    bad_words: list[Annotated[str, Field(min_length=1, max_length=100)]] | None = Field(None, max_length=64)
    allowed_token_ids: TokenIds | None = Field(None, max_length=10_000)
    structured_outputs: dict[str, Any] | None = None  # json, regex, choice, grammar

    @field_validator("stop")
    @classmethod
    def _stops(cls, v: str | list[str] | None) -> str | list[str] | None:
        if isinstance(v, list) and len(v) > 4:
            raise ValueError("at most 4 stop sequences")
        return v

    @property
    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))

    def options(self) -> dict[str, Any]:
        return {k: v for k in (*OPENAI_SAMPLING, *VLLM_SAMPLING) if (v := getattr(self, k)) is not None}

    def stops(self) -> tuple[str, ...] | None:
        return None if self.stop is None else (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)


class CompletionBody(SamplingFields):
    prompt: str = Field(min_length=1, max_length=200_000)
    echo: Literal[False] = False


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant", "developer"]
    content: str | list[TextPart]

    def plain(self) -> dict[str, str]:
        text = self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)
        return {"role": self.role, "content": text}


class ChatBody(SamplingFields):
    messages: list[Message] = Field(min_length=1, max_length=256)
    max_completion_tokens: int | None = Field(None, ge=1, le=32768)  # OpenAI's newer name for max_tokens


class GlossaryTerm(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str = Field(min_length=1, max_length=100, description="A word or phrase of the source text.")
    target: str = Field(min_length=1, max_length=100, description="The translation it must get.")


class TranslateBody(BaseModel):
    text: list[str] = Field(min_length=1, description="Texts to translate, each on its own.")
    target_lang: str = Field(description="A language code, e.g. fr (GET /v1/translate/languages lists them).")
    source_lang: str | None = Field(None, description="A language code; omitted or 'auto' to detect it.")
    model: str | None = Field(None, description="The service's alias (default), or a version for an admin key.")
    glossary: list[GlossaryTerm] = Field(
        default_factory=list, max_length=500,
        description="Terms that occur in a text go to the version's terminology template; each answer is "
                    "checked for them (missing_terms).")
    context: str = Field("", max_length=4000,
                         description="Text around these texts, for a contextual template; never translated itself.")
    use_memory: bool = Field(True, description="False: every text goes to a model, even one the translation memory "
                                               "has.")


class AnswerFlag(BaseModel):
    check: Literal["wrong_language", "untranslated", "length_ratio", "missing_terms", "format_lost"]
    message: str = Field(description="What is wrong, in words for the translator.")


class Translation(BaseModel):
    text: str
    version: str
    detected_source_lang: str | None = Field(description="The detected language's code, when source_lang was auto.")
    detected_confidence: float | None = None
    template: str = Field(description="The version's template that was used: plain, terminology, contextual, "
                                      "formatted.")
    note: str = Field("", description="A template the version lacked, when one was needed.")
    missing_terms: list[GlossaryTerm] = Field(default_factory=list,
                                              description="Glossary terms the translation does not contain.")
    format_lost: list[str] = Field(default_factory=list, description="Formatting that did not survive.")
    flags: list[AnswerFlag] = Field(default_factory=list, description="What the answer checks found: an empty "
                                    "list is a clean answer.")
    memory: str | None = Field(None, description="Answered from translation memory (version 'memory', no model "
                                                 "asked): where the entry came from.")


class TranslateResult(BaseModel):
    translations: list[Translation]
    source_lang: str
    target_lang: str


# admin API --------------------------------------------------------------------------------
class LoadBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    model_path: str | None = Field(None, description="Register (or re-register) the recipe; omit to load a saved one.")
    url: str | None = Field(None, description="Instead of model_path: a remote version, served by an OpenAI-compatible "
                                              "server that runs elsewhere (under BATON_ALLOWED_REMOTE). Baton never "
                                              "starts or stops it.")
    served_model: str | None = Field(None, description="The model name the server serves (default: the name).")
    api_key_env: str | None = Field(None, description="A remote version's API key is read from this environment "
                                                      "variable of Baton's (one of BATON_REMOTE_KEY_ENVS), never sent.")
    flags: list[str] = Field(default_factory=list, description="vLLM flags from BATON_ALLOWED_FLAGS.")
    template: str | None = Field(None, description="Prompt template with {source_lang}, {target_lang}, {text}.")
    templates: dict[str, str] | None = Field(
        None, description="More templates by capability: terminology (with {terms}), contextual (with {context}), "
                          "formatted, and term (one glossary line, with {source_term} and {target_term}).")
    max_tokens: int | None = Field(None, ge=1, le=32768)
    on_wrong_language: Literal["flag", "retranslate"] | None = Field(
        None, description="An answer that does not read as the target language: shown with a warning (flag, the "
                          "default), or translated again once by another ready version (retranslate).")


class ForceBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    force: bool = Field(False, description="Make the change even if the quality gate refuses it (audited as forced).")


class SwitchBody(ForceBody):
    name: str


class EvalBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    set: str | None = Field(None, description="A set from GET /admin/v1/evaluation-sets; default: the gate set.")


class CanaryBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    percent: int = Field(ge=1, le=99)


class ShadowBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    percent: int = Field(ge=1, le=100, description="Share of routed requests copied to the shadow.")


class KeyBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    role: Role = "user"


class DeploymentView(BaseModel):
    """The deployment as every deployment call answers it: what serves, and can it serve now."""

    active: str | None
    canary: str | None
    canary_percent: int
    standby: str | None  # the previous version, kept loaded for an instant rollback
    shadow: str | None  # gets a copy of shadow_percent % of routed requests; its answers are only compared
    shadow_percent: int
    shadow_stats: ShadowStats | None  # since the shadow started
    updated_by: str
    updated_at: datetime | None
    status: Literal["ok", "degraded", "unavailable"]
    detail: str  # why the active version is not serving, in a sentence; "" when it is
    versions: dict[str, str]  # loaded version -> state
    generation: int  # of the deployment the answering replica applies; one more per change
    replica: str  # the answering replica (BATON_REPLICA_ID)


class RolloutBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="The version to ramp up; it must be loaded and ready.")
    steps: list[int] | None = Field(None, description="Canary percents ending with 100 (the promote); "
                                                      "default BATON_ROLLOUT_STEPS.")
    step_s: float | None = Field(None, description="Judge each step after this long (default BATON_ROLLOUT_STEP_S)...")
    step_requests: int | None = Field(None, description="...or after this many canary answers, whichever is first "
                                                        "(0: by time only).")


class LiveNumbers(BaseModel):
    """One version's live traffic in the current step's window."""

    version: str
    answers: int
    errors: int
    error_rate: float | None
    ttft_p95_ms: float | None
    votes_up: int
    votes_down: int
    shadow_agreement: float | None


class RolloutView(BaseModel):
    candidate: str
    baseline: str
    state: Literal["running", "passed", "aborted"]
    step: int = Field(description="1-based index into steps")
    steps: list[int]
    percent: int = Field(description="The canary share of the current step")
    step_s: float
    step_requests: int
    step_elapsed_s: float | None
    started_by: str
    started_at: datetime | None
    ended_at: datetime | None
    detail: str = Field(description="Why it ended")
    next_decision: str
    runner: str | None = Field(description="The replica that drives it (judges and steps it); null on one box")
    canary: LiveNumbers | None
    active: LiveNumbers | None
    timeline: list[dict[str, Any]] = Field(description="Every analysis so far: step, percent, numbers, verdict, "
                                                       "reasons")


class Unloaded(BaseModel):
    name: str
    drained: bool  # every request it was answering finished before it stopped


class Logs(BaseModel):
    name: str
    lines: list[str]
