"""The pytest entry point of a campaign worker (see ``popek.fuzz.campaign``).

``popek fuzz`` runs ``pytest -n N --dist each`` on this file: every xdist
worker runs this one test, which reads the campaign's configuration from
the file named by the environment and fuzzes until its budget or the
deadline ends (`popek.fuzz.worker_loop.run_worker`).  Findings
are the campaign's results, not test failures: the test fails only if the
worker could not run.
"""

import json
import os

from popek.fuzz.campaign_config import CONFIG_ENV, CampaignConfig
from popek.fuzz.worker_loop import run_worker, worker_index


def test_campaign_worker() -> None:
    path = os.environ.get(CONFIG_ENV)
    assert path, f"run by `popek fuzz`, which sets {CONFIG_ENV}"
    with open(path, encoding="utf-8") as f:
        config = CampaignConfig.from_json(json.load(f))
    result = run_worker(config, worker_index())
    ran = result["cases"] > 0 or result["findings"] or config.reuse_only or result.get("budget") == 0
    assert ran, "the worker ran no case"
