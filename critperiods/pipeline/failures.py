"""Why jobs failed, in one line each, at the end of a failed run (the Snakefile's
``onerror``).

Snakemake reports a failed job as "Error in rule X: … log: <path> (check log file(s) for
error details)": the reason is in the job's log, the last line of a Python traceback. This
module reads Snakemake's own log for those entries and returns each job's rule, the reason
and its log, so the console ends with what went wrong instead of a pointer to it. It reads
text only (no PyTorch): the Snakefile imports it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

_ERROR = re.compile(r"^\s*Error in rule (\S+):$")  # indented: a member of a group job
_LOG = re.compile(r"^\s+log: (.+?)(?: \(check log file\(s\) for error details\))?$")
_JOBID = re.compile(r"^\s+jobid: (\d+)$")
_MESSAGE = re.compile(r"^\s+message: (.+)$")
_RESTART = re.compile(r"^Trying to restart job (\d+)\.$")
#: The last line of a traceback: "package.module.SomeError: message" or "SomeError: message".
_EXCEPTION = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?([A-Z]\w*(?:Error|Exception|Exit)): (.+)$")
#: A tqdm progress bar ("bs64 seeds 1 trunk→e2:  40%|████      | 2/5").
_PROGRESS = re.compile(r"\d+%\|")
#: A stage's own one-line verdict (``prepare_data``'s unavailable data: "critperiods: dataset.name:
#: …"), which it prints last, after the traceback of the error beneath it.
_OWN = "critperiods: "


def failed_jobs(snakemake_log: str | Path) -> list[tuple[str, str, str]]:
    """``(rule, reason, job log)`` for each job Snakemake's log reports as failed and did not
    retry afterwards (an attempt followed by "Trying to restart job N." is left out: a
    preempted training job's retry resumes, and may succeed), once per job; the reason is
    the executor's message where it gives one (the SLURM plugin's job state), then the
    exception the job's log ends with ("CheckpointError: …"), or its last line. Members of a
    group job are reported as their own rules."""
    try:
        lines = Path(snakemake_log).read_text(errors="replace").splitlines()
    except OSError:
        return []
    restarted = {int(m.group(1)): i for i, line in enumerate(lines)
                 if (m := _RESTART.match(line))}
    found: dict[tuple[str, str], tuple[str, str, str]] = {}
    for i, line in enumerate(lines):
        rule = _ERROR.match(line)
        if not rule:
            continue
        jobid, path, message = None, None, None
        for entry in lines[i + 1:i + 30]:
            if not entry.startswith(" ") or _ERROR.match(entry):
                break
            if (job := _JOBID.match(entry)) is not None:
                jobid = int(job.group(1))
            if (said := _MESSAGE.match(entry)) is not None and said.group(1) != "None":
                message = said.group(1).strip()  # an executor's verdict (SLURM: TIMEOUT, …)
            if (log := _LOG.match(entry)) is not None:
                path = log.group(1).split(",")[0].strip()
        if path is None or (jobid is not None and restarted.get(jobid, -1) > i):
            continue
        reason = _reason(path)
        found[(rule.group(1), path)] = (rule.group(1), f"{message}; {reason}" if message and
                                        reason else message or reason, path)
    return list(found.values())


def _reason(job_log: str | Path) -> str:
    """The job's own verdict where its log ends with one ("critperiods: <reason>", after the
    traceback of the error beneath it, whose last line is not the reason), else the exception
    its log ends with, else its last non-empty line ("" if none); a last line that is a
    progress bar means the job was stopped from outside, and says so."""
    try:
        lines = [x.strip() for x in Path(job_log).read_text(errors="replace").splitlines()]
    except FileNotFoundError:
        return ("no log: it ended before its setup opened one (stopped at once, or a failed "
                "start: see Snakemake's output or the SLURM log)")
    except OSError:
        return ""
    lines = [x for x in lines if x]
    if lines and _PROGRESS.search(lines[-1]):  # not an error it handled earlier
        return ("stopped from outside, with no error in its log (Ctrl-C, a kill, the time or "
                f"memory limit), at: {lines[-1]}")
    if lines and lines[-1].startswith(_OWN):
        return lines[-1].removeprefix(_OWN)
    for line in reversed(lines[-40:]):
        found = _EXCEPTION.match(line)
        if found:
            return f"{found.group(1)}: {found.group(2)}"
    return lines[-1] if lines else ""


def say_why(snakemake_logs: str | Path | Iterable[str | Path]) -> str:
    """The lines the ``onerror`` handler prints: "critperiods: <rule> failed: <reason>
    (log: <path>)" per failed job, without the log where the job never wrote it (a
    submission that failed); "" when the logs name none. Snakemake 9 hands ``onerror`` a
    list of its logs; one path is taken too."""
    logs = ([snakemake_logs] if isinstance(snakemake_logs, str | Path)
            else list(snakemake_logs))
    return "\n".join(f"critperiods: {rule} failed: {reason or 'see its log'}"
                     + (f" (log: {path})" if Path(path).exists() else "")
                     for log in logs for rule, reason, path in failed_jobs(log))


__all__ = ["failed_jobs", "say_why"]
