"""`kocurate card` and `kocurate push-to-hub`: describe a dataset folder, then publish it."""

from __future__ import annotations

import click
from rich.table import Table

from .render import console


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:,} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return str(n)


@click.command("card")
@click.argument("out", type=click.Path(file_okay=True, dir_okay=True))
@click.option("--card-template", "template", default=None, metavar="NAME|PATH",
              help="Card template: generic, kopen-platypus, koquality, cot-capped, or a .j2 file that may "
                   "{% extends \"generic.md.j2\" %}. Default: the manifest's recipe, else generic.")
@click.option("--template", "old_template", default=None, hidden=True,
              help="Old name of --card-template (--template now means the prompt template only).")
@click.option("--repo-id", default=None, metavar="NAMESPACE/NAME",
              help="Name the Hub repo in the card's load example (e.g. me/koquality-1pct).")
@click.option("--pretty-name", default=None, help="Title of the card. Default: the folder's name.")
@click.option("--check", is_flag=True, help="Only validate the existing README.md against the folder; write nothing.")
@click.option("--stdout", "to_stdout", is_flag=True, help="Print the rendered card instead of writing README.md.")
@click.option("--license", "license_", default=None, metavar="ID",
              help="Declare the set's license (a Hub id such as cc-by-4.0, or your own short name). Recorded in "
                   "manifest.json so later cards keep it. Default: a per-row `license` column, else the sources' licenses.")
def card_cmd(out, template, old_template, repo_id, pretty_name, check, to_stdout, license_):
    """Render or refresh OUT/README.md, the dataset card, and validate it (--stdout to preview).

    \b
    The card's YAML metadata is computed from the folder: language, license (carried from the
    sources; `other` with a note when they disagree), task_categories, size_categories (from the
    rows), source_datasets, tags, `configs` (data/ as default, removed/ as `removed`) and
    `dataset_info` (features and split sizes read from the parquet files). The prose comes from
    manifest.json: every step with its parameters and rows in and out, removed rows by reason,
    the decontamination result, columns, how to load, licenses, limitations and citations.
    The card is checked with huggingface_hub's DatasetCard before it is written.

    \b
    Examples:
      kocurate card out/koquality-1pct
      kocurate card out/koquality-1pct --repo-id me/koquality-1pct
      kocurate card out/clean --card-template my_card.md.j2 --stdout
      kocurate card out/koquality-1pct --check
    """
    from ..errors import InputError
    from ..publish.card import check_folder, make_card, validate_card

    if old_template is not None:
        if template is not None:
            raise InputError("--template is the old name of --card-template; pass only --card-template")
        click.echo("note: `card --template` is now `--card-template` (--template names the prompt template only); "
                   "the old name goes in the next release", err=True)
        template = old_template
    if check:
        folder, _ = check_folder(out)
        readme = folder / "README.md"
        if not readme.is_file():
            raise InputError(f"{readme}: missing; render it with `kocurate card {folder}`")
        problems = validate_card(readme.read_text(encoding="utf-8"), folder)
        if problems:
            raise InputError(f"{readme}: {problems[0]}" + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")
                             + f"; refresh it with `kocurate card {folder}`")
        console.print(f"[green]ok[/] {readme} is a valid dataset card for the files in {folder}")
        return
    if repo_id:
        from ..publish.hub import check_repo_id

        check_repo_id(repo_id)
    result = make_card(out, template=template, repo_id=repo_id, pretty_name=pretty_name, write=not to_stdout, license=license_)
    if to_stdout:
        click.echo(result.text, nl=False)
        return
    ctx = result.context
    table = Table(title=f"dataset card: {result.path}", title_justify="left", show_header=False)
    table.add_row("template", result.template)
    table.add_row("rows", f"{ctx['rows']:,} ({ctx['size_category']}); removed/ holds {ctx['removed_rows']:,}")
    table.add_row("configs", ", ".join(c["config_name"] for c in ctx["meta"]["configs"]))
    table.add_row("license", ctx["license"] + (f" ({ctx['license_name']})" if ctx["license_name"] else ""))
    table.add_row("commercial use", ctx["commercial"])
    table.add_row("sources", ", ".join(s.name for s in ctx["sources"]) or "-")
    table.add_row("steps", " -> ".join(s["name"] for s in ctx["steps"]) or "-")
    table.add_row("contamination", ctx["contamination"].status)
    table.add_row("citations", str(len(ctx["citations"])))
    table.add_row("card", f"{len(result.text.encode()):,} bytes, validated with huggingface_hub DatasetCard")
    console.print(table)
    for warning in ctx["license_warnings"]:
        console.print(f"[yellow]note[/] {warning}")


@click.command("push-to-hub")
@click.argument("out", type=click.Path(file_okay=True, dir_okay=True))
@click.argument("repo_id")
@click.option("--public", "public", is_flag=True,
              help="Make a NEW repo public. Repos are created private unless you pass this (an existing repo keeps its visibility).")
@click.option("--private", "private_flag", is_flag=True, help="Create the repo private (the default; kept for explicitness).")
@click.option("--revision", default=None, metavar="BRANCH",
              help="Commit to this branch (created from main if it does not exist). Default: main.")
@click.option("--create-pr", is_flag=True, help="Open a pull request with the commit instead of committing to the branch.")
@click.option("--commit-message", default=None, help="Commit summary. Default: 'Upload OUT (N rows) with kocurate'.")
@click.option("--endpoint", default=None, metavar="URL",
              help="Hub to push to (a self-hosted or mirror Hub). Default: $HF_ENDPOINT, else https://huggingface.co.")
@click.option("--token-file", default=None, type=click.Path(dir_okay=False), metavar="FILE",
              help="Read the token from FILE (one line). Else HF_TOKEN, else the `hf auth login` token. "
                   "There is deliberately no --token flag: it would land in your shell history.")
@click.option("--dry-run", is_flag=True, help="Validate everything and list the files that would go, with sizes; contact nothing.")
@click.option("--allow-contaminated", is_flag=True,
              help="Publish even when the decontamination report still lists benchmark matches in data/.")
@click.option("--exclude-removed", is_flag=True, help="Publish no removed/ rows at all (the card says how many were left out).")
@click.option("--include-benchmark-matches", is_flag=True,
              help="Also publish the removed rows that matched benchmark items (left out by default: they are near copies of test sets).")
@click.option("--license", "license_", default=None, metavar="ID",
              help="Declare the published set's license (a Hub id such as cc-by-4.0); the uploaded card says so.")
@click.option("--include-merged", is_flag=True,
              help="Adapter folders only: also publish merged/ (the base with the adapter merged in, from `train --merge`).")
@click.option("--retries", default=4, show_default=True, help="Retries on transient Hub errors (429, 5xx, dropped connections).")
def push_cmd(out, repo_id, public, private_flag, revision, create_pr, commit_message, endpoint, token_file, dry_run,
             allow_contaminated, exclude_removed, include_benchmark_matches, license_, include_merged, retries):
    """Upload dataset folder OUT to the Hub as dataset REPO_ID, in one commit; or an adapter folder as a model.

    \b
    Before contacting the Hub it checks: OUT has data/ rows, manifest.json and a README.md that
    validates against its files (`kocurate card OUT` makes one); REPO_ID is NAMESPACE/NAME; the
    rows in data/ were all checked by its decontamination step when it has one (rows that came in
    later make it refuse; --allow-contaminated publishes anyway); a token exists. Then it creates
    the repo if needed (private unless --public), and uploads README.md, manifest.json, data/,
    checks/ and removed/ in ONE commit: if anything fails, the remote is left as it was.
    Transient errors are retried with backoff.

    \b
    removed/ goes without the rows that matched benchmark items (near copies of test sets) unless
    --include-benchmark-matches; --exclude-removed leaves all of removed/ out. When rows are left
    out, or --license is given, the uploaded README.md is re-rendered for exactly what is
    published and says what was left out; the local card is not touched.

    \b
    An adapter folder (one holding adapter_config.json, from `kocurate train -o OUT`) goes to a
    MODEL repo: README.md (the model card; rendered from train_report.json when missing),
    adapter_config.json, the adapter weights, the tokenizer files, train_report.json and
    train_log.jsonl. checkpoints/, train_run.json and dotfiles stay local, and merged/ too unless
    --include-merged. Absolute local paths in the uploaded JSON files and card are replaced
    (relative to OUT, or <local>/NAME); the local files are not changed.

    \b
    Examples:
      kocurate push-to-hub out/koquality-1pct me/koquality-1pct --dry-run
      kocurate push-to-hub out/adapter me/polyglot-ko-lora --dry-run
      HF_TOKEN=... kocurate push-to-hub out/koquality-1pct me/koquality-1pct
      kocurate push-to-hub out/clean my-org/ko-clean --token-file ~/.hf_write_token --create-pr
      kocurate push-to-hub out/clean me/ko-clean --endpoint https://hub.example.com --revision v2
    """
    from ..errors import InputError
    from ..publish import hub

    if public and private_flag:
        raise InputError("--public and --private contradict each other; pass one")
    if hub.is_adapter_folder(out):
        given = [flag for flag, on in (("--allow-contaminated", allow_contaminated), ("--exclude-removed", exclude_removed),
                                       ("--include-benchmark-matches", include_benchmark_matches),
                                       ("--license", license_ is not None)) if on]
        if given:
            raise InputError(f"{given[0]} applies to dataset folders, and {out} is an adapter folder (it holds "
                             "adapter_config.json); drop it" + ("; declare the license in the adapter's README.md"
                                                                if given[0] == "--license" else ""))
        plan = hub.plan_adapter_push(out, repo_id, endpoint=endpoint, private=not public, revision=revision,
                                     create_pr=create_pr, commit_message=commit_message, include_merged=include_merged)
        try:
            _push(plan, token_file, dry_run, retries)
        finally:
            plan.cleanup()
        return
    if include_merged:
        raise InputError(f"--include-merged applies to adapter folders, and {out} holds no adapter_config.json; drop it")
    if exclude_removed and include_benchmark_matches:
        raise InputError("--exclude-removed and --include-benchmark-matches contradict each other; pass one")
    removed = "none" if exclude_removed else ("all" if include_benchmark_matches else "no-benchmark")
    plan = hub.plan_push(out, repo_id, allow_contaminated=allow_contaminated, endpoint=endpoint, private=not public,
                         revision=revision, create_pr=create_pr, commit_message=commit_message, removed=removed,
                         license=license_)
    try:
        _push(plan, token_file, dry_run, retries)
    finally:
        plan.cleanup()


def _push(plan, token_file, dry_run, retries):
    from ..errors import InputError
    from ..publish import hub

    token, source = hub.resolve_token(token_file)
    plan.token_source = source
    hub.check_no_token(plan, token)  # a dry run says so too
    if not dry_run and not token:
        raise InputError("no Hub token found: pass --token-file FILE, set HF_TOKEN, or log in with `hf auth login`")

    where = f"{plan.endpoint}/datasets/{plan.repo_id}" if plan.repo_type == "dataset" else f"{plan.endpoint}/{plan.repo_id}"
    files = Table(title=f"{'would upload' if dry_run else 'uploading'} {plan.folder} -> {where}",
                  title_justify="left")
    files.add_column("file")
    files.add_column("size", justify="right")
    for f in plan.files:
        files.add_row(f.path_in_repo, _size(f.size))
    files.add_section()
    files.add_row(f"{len(plan.files)} files", _size(plan.total_bytes))
    console.print(files)
    if plan.skipped:
        console.print(f"[dim]not published{' (outside the Hub layout)' if plan.repo_type == 'dataset' else ''}: "
                      f"{', '.join(plan.skipped[:10])}"
                      f"{' ...' if len(plan.skipped) > 10 else ''}[/]")
    for warning in plan.warnings:
        console.print(f"[yellow]note[/] {warning}")

    if dry_run:
        summary = _summary_table(plan, "dry run: nothing was sent")
        summary.add_row("token", f"found ({source})" if token else "none found: the real push would stop here "
                        "(use --token-file, HF_TOKEN or `hf auth login`)")
        console.print(summary)
        return

    def on_retry(what, attempt, status, wait):
        console.print(f"[yellow]retry[/] {what}: the Hub answered {status}; attempt {attempt + 1} in {wait:.1f}s")

    result = hub.push(plan, token, token_source=source, retries=retries, on_retry=on_retry)
    summary = _summary_table(plan, "pushed")
    summary.add_row("token", source)
    summary.add_row("repo", result.repo_url)
    summary.add_row("commit", f"{result.commit_oid[:12]} {result.commit_url}")
    if result.pr_url:
        summary.add_row("pull request", result.pr_url)
    retried = {k: v - 1 for k, v in result.attempts.items() if v > 1}
    summary.add_row("retries", ", ".join(f"{k}: {v}" for k, v in retried.items()) or "none")
    summary.add_row("seconds", f"{result.seconds:.2f}")
    console.print(summary)


def _summary_table(plan, title: str) -> Table:
    table = Table(title=title, title_justify="left", show_header=False)
    table.add_row("repo id", f"{plan.repo_id} ({plan.repo_type}, {'private' if plan.private else 'public'} if created)")
    table.add_row("endpoint", plan.endpoint)
    table.add_row("target", (f"pull request against {plan.revision or 'main'}" if plan.create_pr else f"branch {plan.revision or 'main'}"))
    table.add_row("commit message", plan.commit_message)
    if plan.contamination is not None:
        table.add_row("rows", f"{plan.rows:,}")
    table.add_row("files", f"{len(plan.files)} ({_size(plan.total_bytes)}) in one commit")
    if plan.contamination is not None:
        table.add_row("contamination", plan.contamination.status)
    else:
        table.add_row("content", plan.description or "adapter")
    view = plan.view
    if view is not None and view.left_out:
        table.add_row("left out", f"{view.left_out:,} removed rows ({'all' if view.what == 'all' else 'benchmark matches'})")
    return table


COMMANDS = [card_cmd, push_cmd]
