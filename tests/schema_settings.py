"""Settings sections that tests build by hand, filled from the config schema's defaults as the
Snakefile fills them, so that no test restates a default."""

from lesionflow.evaluation.bootstrap import Resampler
from lesionflow.evaluation.metrics import LesionMatching
from lesionflow.pipeline.config import complete_run_section, fill_defaults, load_schema


def top_level_section(name: str, **partial) -> dict:
    """The top-level config section ``name`` (data, split, compare) with the schema's defaults filled."""
    schema = load_schema()
    return fill_defaults(partial, schema["properties"][name], schema)


def synthetic_settings(**partial) -> dict:
    """data.synthetic less its kind: the generators' keyword arguments, schema defaults filled."""
    section = top_level_section("data", synthetic=partial)["synthetic"]
    return {key: value for key, value in section.items() if key != "kind"}


def split_section(**partial) -> dict:
    """The split section as the split stage receives it, schema defaults filled."""
    return top_level_section("split", **partial)


def split_settings(**partial) -> dict:
    """The keyword arguments of make_split (fractions and seed), schema defaults filled."""
    section = split_section(**partial)
    return {key: section[key] for key in ("train", "val", "test", "seed")}


def evaluate_settings(**partial) -> dict:
    """The evaluate section with the schema's defaults filled."""
    return complete_run_section("evaluate", partial)


def tune_settings(**partial) -> dict:
    """The tune section with the schema's defaults filled."""
    return complete_run_section("tune", partial)


def size_bins() -> list[int]:
    """evaluate.size_bins of the schema."""
    return evaluate_settings()["size_bins"]


def lesion_matching(**partial) -> LesionMatching:
    """evaluate.lesion_matching of the schema, its null connectivity read as tune.connectivity's
    default (the one tuning locks unless told otherwise)."""
    rules = {**evaluate_settings()["lesion_matching"], **partial}
    if rules["connectivity"] is None:
        rules["connectivity"] = tune_settings()["connectivity"]
    return LesionMatching(**rules)


def evaluate_resampler(subjects, **partial) -> Resampler:
    """A Resampler with evaluate.bootstrap's schema settings, any of them given in ``partial``."""
    boot = {**evaluate_settings()["bootstrap"], **partial}
    return Resampler.from_subjects(subjects, **boot, config_key="evaluate.bootstrap")
