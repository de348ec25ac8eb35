"""The domain spec: what the guarded chatbot is for, what it must refuse, and where its data is.

A spec is a YAML file validated by :class:`GuardSpec` (pydantic, since it is an edge).
Dataset paths in it are relative to the spec file.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from topicguard._exceptions import SpecError

__all__ = [
    "GenerationSettings",
    "GuardSpec",
    "LLMEndpoint",
    "LabelNames",
    "bundled_example",
    "load_spec",
]

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
# what a blocked user reads when the spec gives no English refusal
DEFAULT_REFUSAL = (
    "Sorry, I can only help with questions about {company}. "
    "Is there anything about {company} I can help you with?"
)


class LabelNames(BaseModel):
    """The label strings a trained model reports; the reference uses "True" and "False"."""

    model_config = ConfigDict(extra="forbid")

    allowed: str = Field(default="True", description="label of on-topic queries, let through")
    blocked: str = Field(
        default="False", description="label of off-topic or hostile queries, stopped"
    )


class DataPaths(BaseModel):
    """Datasets that belong to the spec, relative to the spec file."""

    model_config = ConfigDict(extra="forbid")

    train: list[Path] = Field(default_factory=list, description="training datasets")
    test: list[Path] = Field(default_factory=list, description="held-out evaluation datasets")


class GenerationSettings(BaseModel):
    """How ``topicguard generate`` composes batches for this spec."""

    model_config = ConfigDict(extra="forbid")

    batch_size: int = Field(default=50, ge=2, description="queries per LLM call, half on topic")
    company_mention_share: float = Field(
        default=0.3, ge=0, le=1, description="share of queries that name the company"
    )
    hard_negative_share: float = Field(
        default=0.25, ge=0, le=1, description="share of off-topic rows close to the domain"
    )
    jailbreak_share: float = Field(
        default=0.15, ge=0, le=1, description="share of off-topic rows that attack the bot"
    )


class LLMEndpoint(BaseModel):
    """Defaults for ``generate`` and ``review``; command-line options override them. The key
    itself never goes in a spec: ``api_key_env`` names the environment variable holding it."""

    model_config = ConfigDict(extra="forbid")

    base_url: str = Field(default="https://api.deepseek.com", description="endpoint")
    generator_model: str = Field(default="deepseek-chat", description="model for generate")
    judge_model: str = Field(default="deepseek-reasoner", description="model for review")
    api_key_env: str | None = Field(
        default=None,
        description="environment variable with the key (default: "
        "TOPICGUARD_API_KEY, then OPENAI_API_KEY)",
    )


class GuardSpec(BaseModel):
    """One guarded chatbot's domain. The policy text is what the LLM stages read."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="short identifier of the guard, used in model metadata")
    company: str = Field(description="the company whose chatbot is guarded")
    purpose: str = Field(description="one or two sentences: what the chatbot is for")
    allowed_topics: list[str] = Field(min_length=1, description="what users may ask about")
    blocked_topics: list[str] = Field(min_length=1, description="what must be refused")
    policy: str = Field(description="the labelling policy, read by the generator and the judge")
    labels: LabelNames = Field(default_factory=LabelNames)
    languages: list[str] = Field(default_factory=lambda: ["en"], min_length=1)
    data: DataPaths = Field(default_factory=DataPaths)
    generation: GenerationSettings = Field(default_factory=GenerationSettings)
    llm: LLMEndpoint = Field(default_factory=LLMEndpoint)
    base_model: str | None = Field(default=None, description="default encoder to fine-tune")
    refusal: dict[str, str] = Field(
        default_factory=dict,
        description="what a blocked user reads (the proxy's answer), one text per language "
        "code; a language without one gets the English text, by default: "
        + DEFAULT_REFUSAL.format(company="COMPANY"),
    )
    source_path: Path | None = Field(
        default=None, exclude=True, description="where the spec was read"
    )

    @field_validator("name", "company", "purpose", "policy")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value.strip()

    @field_validator("refusal")
    @classmethod
    def _refusal_texts(cls, value: dict[str, str]) -> dict[str, str]:
        for lang, text in value.items():
            if not text.strip():
                raise ValueError(f"the {lang!r} refusal must not be empty")
        return {lang.strip().lower(): text.strip() for lang, text in value.items()}

    def refusal_text(self, lang: str | None) -> str:
        """The refusal for a user writing in ``lang``: its own text, else the English one."""
        if lang and lang in self.refusal:
            return self.refusal[lang]
        return self.refusal.get("en") or DEFAULT_REFUSAL.format(company=self.company)

    def missing_refusals(self) -> list[str]:
        """The spec's languages (other than English, which has a default) with no refusal."""
        return [lang for lang in self.languages if lang != "en" and lang not in self.refusal]

    def train_paths(self) -> list[Path]:
        return [self._resolve(p) for p in self.data.train]

    def test_paths(self) -> list[Path]:
        return [self._resolve(p) for p in self.data.test]

    def _resolve(self, path: Path) -> Path:
        if path.is_absolute() or self.source_path is None:
            return path
        return (self.source_path.parent / path).resolve()


def load_spec(path: str | Path) -> GuardSpec:
    """Read and validate a spec file; errors name the file and the offending field."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(
            f"spec file not found: {path} (pass a guard.yaml, or omit it for the example)"
        )
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise SpecError(f"cannot read spec {path}: {_one_line(exc)}") from exc
    if not isinstance(raw, dict):
        raise SpecError(f"spec {path} must be a YAML mapping with keys like name, company, policy")
    try:
        spec = GuardSpec.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}"
            for err in exc.errors()
        )
        raise SpecError(f"invalid spec {path}: {problems}") from exc
    spec.source_path = path.resolve()
    return spec


def bundled_example(name: str = "logistics") -> Path:
    """Path of a spec shipped inside the package, e.g. the Spellbots Logistics example."""
    path = EXAMPLES_DIR / name / "guard.yaml"
    if not path.is_file():
        known = sorted(p.name for p in EXAMPLES_DIR.iterdir() if (p / "guard.yaml").is_file())
        raise SpecError(f"no bundled example {name!r}; available: {', '.join(known)}")
    return path


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
