"""The .proto contracts: lint, breaking-change detection and offline code generation."""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2
from google.protobuf.compiler import plugin_pb2
from shop.orders.v1 import orders_pb2

from wirebus.codegen import generate

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}


def buf(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "buf"), *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=120
    )


def test_buf_lint_is_clean():
    result = buf("lint")
    assert result.returncode == 0, result.stdout + result.stderr


def test_protos_have_no_breaking_change_against_the_committed_baseline():
    result = buf("breaking", "--against", "contracts/baseline.binpb")
    assert result.returncode == 0, result.stdout + result.stderr


def test_removing_a_field_is_reported_as_breaking(tmp_path):
    shutil.copytree(ROOT / "proto", tmp_path / "proto")
    shutil.copy(ROOT / "buf.yaml", tmp_path / "buf.yaml")
    orders = tmp_path / "proto/shop/orders/v1/orders.proto"
    text = orders.read_text()
    assert "  int64 total_cents = 4;\n  OrderStatus status = 5;" in text
    orders.write_text(
        text.replace(
            "  int64 total_cents = 4;\n  OrderStatus status = 5;", "  OrderStatus status = 5;"
        )
    )
    result = buf("breaking", "--against", str(ROOT / "contracts/baseline.binpb"), cwd=tmp_path)
    assert result.returncode != 0
    assert "total_cents" in result.stdout + result.stderr


def test_buf_generate_offline_reproduces_the_generated_python(tmp_path):
    result = buf("generate", "--output", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    fresh, current = tmp_path / "gen/python", ROOT / "gen/python"
    generated = [p for p in current.rglob("*") if p.suffix in (".py", ".pyi")]  # no __pycache__
    for path in sorted(generated):
        rel = path.relative_to(current)
        assert filecmp.cmp(path, fresh / rel, shallow=False), f"{rel} differs: run `make gen`"
    assert (fresh / "shop/orders/v1/orders_pb2_grpc.py").exists()
    assert (fresh / "shop/orders/v1/orders_pb2.pyi").exists()


def test_grpc_python_plugin_writes_service_stubs_from_a_code_generator_request():
    files: list[descriptor_pb2.FileDescriptorProto] = []
    seen: set[str] = set()

    def add(file: Any) -> None:  # dependencies first, as protoc sends them
        if file.name in seen:
            return
        seen.add(file.name)
        for dependency in file.dependencies:
            add(dependency)
        proto = descriptor_pb2.FileDescriptorProto()
        file.CopyToProto(proto)
        files.append(proto)

    add(orders_pb2.DESCRIPTOR)
    request = plugin_pb2.CodeGeneratorRequest(
        file_to_generate=["shop/orders/v1/orders.proto"], proto_file=files
    )
    response = generate(request)
    assert not response.error
    (stub,) = response.file
    assert stub.name == "shop/orders/v1/orders_pb2_grpc.py"
    assert "class OrderServiceStub" in stub.content
    assert "/shop.orders.v1.OrderService/ListOrders" in stub.content
