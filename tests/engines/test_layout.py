"""engines/ holds trainers and iteration functions; handlers/ and inferers/ hold the rest. The old names in
mstl_monai.engines are deprecated aliases that the package and its configs never use."""

from __future__ import annotations

import re
import unittest
import warnings

import mstl_monai.engines
from mstl_monai.engines.deprecated import MOVED
from mstl_monai.handlers import PredictionWriter
from mstl_monai.networks.checkpoint import decision_threshold
from tests.utils import REPO_ROOT


class TestDeprecatedAliases(unittest.TestCase):
    def test_alias_warns_and_resolves(self):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            cls = mstl_monai.engines.PredictionWriter
        self.assertIs(cls, PredictionWriter)
        self.assertTrue(any(issubclass(w.category, DeprecationWarning) and "mstl_monai.handlers" in str(w.message) for w in caught))
        with self.assertWarnsRegex(DeprecationWarning, "mstl_monai.networks.checkpoint"):
            old = mstl_monai.engines.decision_threshold
        with self.assertWarnsRegex(DeprecationWarning, "mstl_monai.networks.checkpoint"):
            self.assertEqual(old(0.3), decision_threshold(0.3))
        with self.assertRaises(AttributeError):
            mstl_monai.engines.no_such_name  # noqa: B018

    def test_package_and_configs_use_the_new_homes(self):
        pattern = re.compile(r"mstl_monai\.engines(?:\.\w+)?\s+import\s+\(?([\w\s,]+)|mstl_monai\.engines\.(\w+)")
        files = [*(REPO_ROOT / "mstl_monai").rglob("*.py"), *(REPO_ROOT / "bundle" / "configs").glob("*.yaml")]
        files += [*(REPO_ROOT / "configs").glob("*.yaml"), *(REPO_ROOT / "scripts").glob("*.py")]
        found = []
        for path in files:
            if path.parent.name == "engines" and path.name in ("__init__.py", "deprecated.py"):
                continue
            for m in pattern.finditer(path.read_text(encoding="utf-8")):
                names = re.findall(r"\w+", m.group(1)) if m.group(1) else [m.group(2)]
                found += [f"{path.relative_to(REPO_ROOT)}: {n}" for n in names if n in MOVED]
        self.assertEqual(found, [])


if __name__ == "__main__":
    unittest.main()
