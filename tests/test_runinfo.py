from pathlib import Path

import pytest
import torch

from fewshot.utils.runinfo import cpu_model, machine_info


def test_cpu_model_reads_the_first_model_name_line(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9B14\n"
                       "processor\t: 1\nmodel name\t: AMD EPYC 9B14\n")
    assert cpu_model(cpuinfo) == "AMD EPYC 9B14"


@pytest.mark.parametrize("text", ["", "processor\t: 0\nmodel name\t:\n"])
def test_cpu_model_falls_back_when_no_model_name_is_given(tmp_path: Path, text: str) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(text)
    assert cpu_model(cpuinfo) not in ("", None)
    assert cpu_model(tmp_path / "missing") == cpu_model(cpuinfo)


def test_machine_info_records_cpu_model_and_vector_isa() -> None:
    info = machine_info(torch.device("cpu"))
    assert info["cpu"] == cpu_model()
    assert info["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert info["device"] == "cpu" and info["cpu_count"] >= 1
