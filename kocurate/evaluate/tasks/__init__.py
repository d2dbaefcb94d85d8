"""lm-evaluation-harness task YAML shipped with kocurate: the legacy polyglot KoBEST protocol
(`polyglot_kobest_*`, group `polyglot_kobest`) and NSMC sentiment (`nsmc_prompt1`, `nsmc_prompt2`,
group `nsmc`). `TASKS_DIR` is what kocurate adds to lm-eval's TaskManager include path."""

from pathlib import Path

TASKS_DIR = Path(__file__).parent
