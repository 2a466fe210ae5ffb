"""A case's work package versions: listing them, the newest, one by id, the one a submission answers, and the pseudo label a package handed out."""

from __future__ import annotations

from alqa_core.annotation.queue.work_package import WorkPackage, read_work_package
from alqa_core.errors import AlqaInputError
from alqa_core.io.nifti import read_label
from alqa_core.volume import LabelMap
from alqa_core.workspace import PACKAGE_ID_RE, WorkspaceLayout, validate_package_id


def case_packages(layout: WorkspaceLayout, case_id: str) -> list[WorkPackage]:
    """Every written version of the case's package, oldest first (by round, then creation time)."""
    folder = layout.work_packages(case_id)
    if not folder.is_dir():
        return []
    found = [read_work_package(p) for p in folder.iterdir() if p.is_dir() and PACKAGE_ID_RE.fullmatch(p.name) and (p / "task.json").exists()]
    return sorted(found, key=lambda w: (w.round_index, w.created_at, w.package_id))


def newest_package(layout: WorkspaceLayout, case_id: str) -> WorkPackage | None:
    """The case's latest package (the one an annotator most recently got), or None if it was never queued."""
    packages = case_packages(layout, case_id)
    return packages[-1] if packages else None


def find_package(layout: WorkspaceLayout, case_id: str, package_id: str) -> WorkPackage:
    folder = layout.work_package(case_id, validate_package_id(package_id))
    if not (folder / "task.json").exists():
        raise AlqaInputError(folder, f"case {case_id} has no work package {package_id}")
    package = read_work_package(folder)
    if package.case_id != case_id:
        raise AlqaInputError(folder / "task.json", f"package {package_id} is for case {package.case_id}, not {case_id}")
    return package


def package_of(layout: WorkspaceLayout, case_id: str, package_id: str | None = None, required: bool = False) -> WorkPackage | None:
    """The package a submission answers: the one named (it must exist), else the case's newest; None if the case was
    never queued, an AlqaInputError instead when ``required`` (a confirmation confirms a package).

    The one rule of ``alqa submit``/``confirm``, ``alqa serve`` and the submissions sensor.
    """
    if package_id:
        return find_package(layout, case_id, package_id)
    newest = newest_package(layout, case_id)
    if newest is None and required:
        raise AlqaInputError(layout.work_packages(case_id), f"case {case_id} has no work package: only a queued case can be confirmed")
    return newest


def package_pseudo_label(package: WorkPackage) -> LabelMap:
    """The pseudo label this package handed out (what a confirmation of it confirms)."""
    return read_label(package.pseudo_label_path)


__all__ = ["case_packages", "find_package", "newest_package", "package_of", "package_pseudo_label"]
