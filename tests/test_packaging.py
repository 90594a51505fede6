"""What `pip install` puts into site-packages: the fewshot library only (benchmarks/ and baselines/ run
from a checkout)."""
from __future__ import annotations

import configparser
from pathlib import Path

import setuptools

ROOT = Path(__file__).resolve().parents[1]


def _setup_cfg() -> configparser.ConfigParser:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    return cfg


def _lines(value: str) -> list[str]:
    return [line.strip() for line in value.splitlines() if line.strip()]


def test_installed_packages_are_fewshot_and_its_subpackages_only():
    include = _lines(_setup_cfg()["options.packages.find"]["include"])
    packages = setuptools.find_packages(where=str(ROOT), include=include)
    assert "fewshot" in packages and "fewshot.models" in packages and "fewshot.data" in packages
    assert [p for p in packages if p != "fewshot" and not p.startswith("fewshot.")] == []


def test_package_data_is_the_class_lists_the_library_reads():
    data = _setup_cfg()["options.package_data"]
    assert dict(data) == {"fewshot": "data/*.txt"}
    assert {p.name for p in (ROOT / "fewshot" / "data").glob("*.txt")} == {"background_classes.txt",
                                                                          "evaluation_classes.txt"}
