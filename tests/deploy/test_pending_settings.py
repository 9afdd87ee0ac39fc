"""Settings the deploy files name ahead of their sibling branches (issue 10) must arrive as
named: once a sibling is merged, its names are real settings and the pending list is emptied."""

from __future__ import annotations

from tests.deploy.deploy_files import PENDING, PENDING_DOCS, ROOT, SETTING_NAMES


def test_pending_settings_are_settled() -> None:
    problems = []
    for group in PENDING:
        arrived = sorted(group.names & SETTING_NAMES)
        if group.merged():
            missing = sorted(group.names - SETTING_NAMES)
            if missing:
                problems.append(
                    f"{group.branch} is merged ({group.merged_sign}) but {missing} are not "
                    "settings: rename them in deploy/ and docs/scale-out.md"
                )
            problems.append(f"{group.branch} is merged: remove its group from PENDING")
        elif arrived:
            problems.append(f"{arrived} are settings now: remove them from PENDING")
    for doc, branch in PENDING_DOCS.items():
        if (ROOT / doc).exists():
            problems.append(f"{doc} ({branch}) exists: remove it from PENDING_DOCS")
    assert problems == []
