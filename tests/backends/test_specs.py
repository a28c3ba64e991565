"""The bundled hardware tables and the name matching that reads them."""

from __future__ import annotations

import csv
import io
from importlib import resources

import pytest

from backends import specs
from backends.specs import close_matches, cpu_tdp_w, gpu_power_w, gpu_specs


def _rows(name: str) -> list[dict[str, str]]:
    text = (resources.files("backends") / "data" / name).read_text(encoding="utf-8")
    return list(csv.DictReader(io.StringIO(text)))


def test_gpu_table_has_38_rows_with_unique_keys_and_a_source_each() -> None:
    rows = _rows("gpu_power.csv")
    assert len(rows) == 38
    assert len({r["key"] for r in rows}) == 38
    assert all(r["source"] and r["source_kind"] for r in rows)
    assert all(float(r["max_power_w"]) > 0 for r in rows)
    assert len(gpu_specs()) == 38


def test_cpu_table_has_4589_rows_with_positive_tdp() -> None:
    rows = _rows("cpu_tdp.csv")
    assert len(rows) == 4589
    assert list(rows[0]) == ["name", "tdp_w"]
    assert all(float(r["tdp_w"]) > 0 for r in rows)
    assert len({r["name"] for r in rows}) == 4589


def test_every_gpu_key_resolves_to_its_own_row() -> None:
    for spec in gpu_specs():
        found = gpu_power_w(spec.key)
        assert found is not None, spec.key
        assert found[1] == spec


@pytest.mark.parametrize(
    ("key", "watts"),
    [
        ("h100-sxm5", 700),
        ("h100-pcie", 350),
        ("v100-sxm2", 300),
        ("v100-pcie", 250),
        ("a100-pcie-40gb", 250),
        ("a100-pcie-80gb", 300),
        ("a100-sxm4-80gb", 400),
        ("tpu-v3", 450),
        ("mi300x", 750),
    ],
)
def test_gpu_table_holds_the_vendor_datasheet_values(key: str, watts: float) -> None:
    spec = next(s for s in gpu_specs() if s.key == key)
    assert spec.max_power_w == watts


@pytest.mark.parametrize(
    ("name", "key", "watts"),
    [
        ("NVIDIA H100 80GB HBM3", "h100-sxm5", 700),
        ("NVIDIA H100 PCIe", "h100-pcie", 350),
        ("NVIDIA H100 NVL", "h100-nvl", 400),
        ("Tesla V100-SXM2-16GB", "v100-sxm2", 300),
        ("Tesla V100-PCIE-32GB", "v100-pcie", 250),
        ("Tesla V100S-PCIE-32GB", "v100s-pcie", 250),
        ("NVIDIA A100-SXM4-40GB", "a100-sxm4-40gb", 400),
        ("NVIDIA A100-SXM4-80GB", "a100-sxm4-80gb", 400),
        ("NVIDIA A100-PCIE-40GB", "a100-pcie-40gb", 250),
        ("NVIDIA A100 80GB PCIe", "a100-pcie-80gb", 300),
        ("NVIDIA H200", "h200-sxm", 700),
        ("NVIDIA H200 NVL", "h200-nvl", 600),
        ("Tesla T4", "t4", 70),
        ("NVIDIA L4", "l4", 72),
        ("NVIDIA A10G", "a10g", 150),
        ("NVIDIA L40S", "l40s", 350),
        ("NVIDIA RTX 6000 Ada Generation", "rtx-6000-ada", 300),
        ("NVIDIA GeForce RTX 4090", "rtx-4090", 450),
        ("AMD Instinct MI300X", "mi300x", 750),
        ("TPU v3", "tpu-v3", 450),
        ("Gaudi2", "gaudi-2", 600),
    ],
)
def test_nvml_and_vendor_names_resolve_to_the_right_variant(
    name: str, key: str, watts: float
) -> None:
    found = gpu_power_w(name)
    assert found is not None
    assert found[0] == watts
    assert found[1].key == key


def test_bare_gpu_model_name_resolves_to_the_sxm_variant() -> None:
    for name, key in [("H100", "h100-sxm5"), ("A100", "a100-sxm4-40gb"), ("V100", "v100-sxm2")]:
        found = gpu_power_w(name)
        assert found is not None and found[1].key == key


@pytest.mark.parametrize(
    "name",
    [
        "NVIDIA GeForce RTX 3090 Ti",  # 450 W, not the 3090's 350 W
        "Tesla V100-SXM3-32GB-H",  # the 450 W DGX-2H part
        "Quadro RTX 6000",  # not the RTX 6000 Ada
        "NVIDIA GH200 480GB",
        "NVIDIA A100-SXM4-64GB",  # no such memory size
        "",
    ],
)
def test_gpu_name_with_unexplained_words_does_not_borrow_a_sibling_rating(name: str) -> None:
    assert gpu_power_w(name) is None


@pytest.mark.parametrize(
    ("name", "table_name", "watts"),
    [
        ("Intel(R) Xeon(R) Platinum 8480+", "Intel Xeon Platinum 8480+", 350),
        ("AMD EPYC 7763 64-Core Processor", "AMD EPYC 7763", 280),
        ("Intel(R) Xeon(R) CPU E5-2686 v4 @ 2.30GHz", "Intel Xeon E5-2686 v4", 145),
        ("Intel(R) Xeon(R) Gold 6248R CPU @ 3.00GHz", "Intel Xeon Gold 6248R", 205),
        ("11th Gen Intel(R) Core(TM) i7-1165G7 @ 2.80GHz", "Intel Core i7-1165G7", 28),
        ("AMD Ryzen 7 PRO 4750U with Radeon Graphics", "AMD Ryzen 7 PRO 4750U", 15),
        ("AMD Ryzen 9 5950X 16-Core Processor", "AMD Ryzen 9 5950X", 105),
        ("Intel(R) Core(TM) i9-13900K", "Intel Core i9-13900K", 125),
        ("AMD EPYC 9654 96-Core Processor", "AMD EPYC 9654", 360),
    ],
)
def test_cpu_names_as_the_os_reports_them_match_the_table(
    name: str, table_name: str, watts: float
) -> None:
    assert cpu_tdp_w(name) == (watts, table_name)


@pytest.mark.parametrize(
    "name",
    [
        "Intel(R) Xeon(R) CPU @ 2.00GHz",  # cloud VM hiding the model
        "Intel Xeon Processor (Skylake, IBRS)",
        "QEMU Virtual CPU version 2.5+",
        "AMD EPYC",
        "Apple M1 Pro",  # not the M1
        "Intel(R) Xeon(R) Platinum 8480C",  # not the 8480+
        "",
    ],
)
def test_unknown_or_generic_cpu_names_do_not_match(name: str) -> None:
    assert cpu_tdp_w(name) is None


def test_close_matches_suggest_neighbours_for_unknown_names() -> None:
    assert close_matches("cpu", "Intel(R) Xeon(R) Platinum 8480C")[0] == "Intel Xeon Platinum 8480+"
    assert "AMD EPYC 7763" in close_matches("cpu", "AMD EPYC 7764")
    gpu = close_matches("gpu", "H100 SXM4")
    assert gpu[:3] == ["h100-sxm5", "h100-pcie", "h100-nvl"]
    assert "rtx-3090" in close_matches("gpu", "RTX 3080", n=3)
    assert len(close_matches("cpu", "AMD EPYC 7", n=2)) <= 2


def test_close_matches_rejects_an_unknown_kind() -> None:
    with pytest.raises(ValueError, match="kind"):
        close_matches("tpu", "v4")  # type: ignore[arg-type]


def test_tables_are_read_lazily_and_once(monkeypatch: pytest.MonkeyPatch) -> None:
    specs._cpu_index.cache_clear()
    specs._gpu_table.cache_clear()
    reads: list[str] = []
    real = specs._read_data

    def counting(name: str) -> str:
        reads.append(name)
        return real(name)

    monkeypatch.setattr(specs, "_read_data", counting)
    cpu_tdp_w("AMD EPYC 7763")
    cpu_tdp_w("AMD EPYC 7742")
    gpu_power_w("H100")
    gpu_power_w("A100")
    assert reads == ["cpu_tdp.csv", "gpu_power.csv"]
