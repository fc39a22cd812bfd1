"""Every example in clients/python/examples, and every Python block of clients/python/README.md,
runs against this test's own server and exits 0."""
import glob
import os
import re
import subprocess
import sys
import unittest

from .servers import HERE, Server

EXAMPLES = sorted(glob.glob(os.path.join(HERE, "..", "examples", "*.py")))
README = os.path.join(HERE, "..", "README.md")
# The repository's README: its Python blocks that use fencelock run too.
MAIN_README = os.path.join(HERE, "..", "..", "..", "README.md")


def readme_blocks(path=README):
    with open(path, encoding="utf-8") as f:
        return re.findall(r"```python\n(.*?)```", f.read(), re.S)


class ExamplesTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Server()

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def test_examples_exit_0(self):
        self.assertTrue(EXAMPLES, "no examples found")
        env = dict(os.environ, REDIS_URL=self.server.url,
                   PYTHONPATH=os.path.abspath(os.path.join(HERE, "..")))
        for path in EXAMPLES:
            with self.subTest(example=os.path.basename(path)):
                run = subprocess.run([sys.executable, path], env=env, capture_output=True,
                                     text=True, timeout=60)
                self.assertEqual(run.returncode, 0, run.stdout + run.stderr)
                self.assertIn("all checks passed", run.stdout)

    def test_readme_blocks_run(self):
        blocks = readme_blocks()
        self.assertGreaterEqual(len(blocks), 3)
        ours = [b for b in readme_blocks(MAIN_README) if "import fencelock" in b]
        self.assertGreaterEqual(len(ours), 2, "the repository README's fencelock examples")
        blocks += ours
        env = dict(os.environ, PYTHONPATH=os.path.abspath(os.path.join(HERE, "..")))
        for n, code in enumerate(blocks):
            with self.subTest(block=n):
                code = code.replace("Redis()", f"Redis(port={self.server.port})")
                run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                                     text=True, timeout=60)
                self.assertEqual(run.returncode, 0, code + run.stdout + run.stderr)


if __name__ == "__main__":
    unittest.main()
