"""The one build step pyproject.toml cannot declare: the descriptor set of mlpk.runtimes.proto
(`grpc_predict_v2.binpb`, a FileDescriptorSet), generated from the published .proto files with grpc_tools.protoc
(a build requirement) when the package is built, so the gRPC messages are never hand-written and always match their
.proto. An editable install writes it beside the .proto files (where the editable package is imported from); a
wheel build writes it into the build tree. runtimes/proto/__init__.py loads it."""

from __future__ import annotations

import tempfile
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

PROTOS = Path(__file__).parent / "runtimes" / "proto"
PACKAGE = "mlpk/runtimes/proto"
DESCRIPTORS = "grpc_predict_v2.binpb"  # the name runtimes/proto/__init__.py reads


def generate(dest: Path) -> None:
    """protoc every .proto of runtimes/proto into one descriptor set at `dest`/DESCRIPTORS."""
    from grpc_tools import protoc

    names = sorted(proto.name for proto in PROTOS.glob("*.proto"))
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=dest, prefix=".descriptors-", delete=False) as tmp:
        staged = Path(tmp.name)
    try:
        code = protoc.main(["protoc", f"-I{PROTOS}", f"--descriptor_set_out={staged}", *names])
        if code != 0:
            raise SystemExit(f"protoc failed ({code}) on {', '.join(names)}")
        staged.replace(dest / DESCRIPTORS)
    finally:
        staged.unlink(missing_ok=True)


class BuildPyWithDescriptors(build_py):
    def run(self) -> None:
        super().run()
        generate(PROTOS if self.editable_mode else Path(self.build_lib) / PACKAGE)


setup(cmdclass={"build_py": BuildPyWithDescriptors})
