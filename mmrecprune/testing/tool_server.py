"""Run many command-line tools as ``python TOOL ARGS...`` would, each in its own process, with
Python, PyTorch and OpenMMLab imported once.

``python -m mmrecprune.testing.tool_server --jobs 2 --timeout 240`` imports what every tool in
``tools/`` imports first (``mmrecprune``, which registers everything), then reads one JSON job
per line on stdin, ``{"id": ..., "tool": path, "argv": [...], "stdout": file, "stderr": file}``,
and forks a child per job, at most ``--jobs`` at once. The child starts a session of its own,
sends its stdout / stderr to the job's files, sets ``sys.argv`` and ``sys.path[0]`` as the
interpreter does for a script, and runs the tool as ``__main__``. For each job that ends the
server prints ``{"id": ..., "returncode": ...}`` on its stdout: the tool's exit status, or
``-signal`` as :mod:`subprocess` reports a killed child. A child still running after
``--timeout`` seconds is killed with its whole session (the stages it started too) and ends
with ``-9``.

Why: the bad-input test runs every tool about 60 times; each fresh interpreter spends ~3.5 s
importing PyTorch and OpenMMLab before the tool reads its first argument, more than the case
itself. A fork of a process that has imported them starts in milliseconds. What a fork does not
check, that each tool imports in a fresh interpreter, the ``--help`` run of every tool
(``tests/test_docs.py``) checks.

The server never runs a PyTorch operator itself, so no thread pool exists when it forks.
"""
import argparse
import json
import os
import runpy
import signal
import sys
import time
import traceback


def run_tool_in_child(job):
    """In the forked child: become ``python TOOL ARGV...`` and exit with its status."""
    os.setsid()  # a session of its own: a timeout kills the tool and the stages it started
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    for fd, path in ((1, job['stdout']), (2, job['stderr'])):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(target, fd)
        os.close(target)
    status = 0
    try:
        tool = job['tool']
        sys.argv = [tool, *job['argv']]
        sys.path[0] = os.path.dirname(os.path.abspath(tool))  # as for `python tool`
        runpy.run_path(tool, run_name='__main__')
    except SystemExit as exit_:
        code = exit_.code
        if code is None or isinstance(code, int):
            status = code or 0
        else:  # sys.exit('message'): Python prints it and exits with 1
            print(code, file=sys.stderr)
            status = 1
    except BaseException:  # noqa: BLE001  an uncaught error: the interpreter's traceback and 1
        traceback.print_exc()
        status = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(status)


def returncode(wait_status):
    """The status as :class:`subprocess.Popen` reports it (``-N`` when killed by signal N)."""
    if os.WIFSIGNALED(wait_status):
        return -os.WTERMSIG(wait_status)
    return os.WEXITSTATUS(wait_status)


def serve(jobs, max_jobs, timeout, report):
    """Run ``jobs`` (a list of job dicts), ``max_jobs`` at once; ``report(id, returncode)``
    as each ends."""
    pending = list(jobs)
    running = {}  # pid -> (job id, start time)
    while pending or running:
        while pending and len(running) < max_jobs:
            job = pending.pop(0)
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                run_tool_in_child(job)
            running[pid] = (job['id'], time.monotonic())
        pid, wait_status = os.waitpid(-1, os.WNOHANG)
        if pid:
            job_id, _ = running.pop(pid)
            report(job_id, returncode(wait_status))
            continue
        now = time.monotonic()
        for pid, (_, started) in list(running.items()):
            if now - started > timeout:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:  # it ended in between; waitpid collects it
                    pass
        time.sleep(0.02)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--jobs', type=int, default=2, help='tools running at once')
    parser.add_argument('--timeout', type=float, default=240,
                        help='seconds before a tool and its session are killed')
    args = parser.parse_args(argv)
    import mmrecprune  # noqa: F401  what every tool imports first (and the registration)
    jobs = [json.loads(line) for line in sys.stdin if line.strip()]

    def report(job_id, code):
        print(json.dumps(dict(id=job_id, returncode=code)), flush=True)

    serve(jobs, args.jobs, args.timeout, report)


if __name__ == '__main__':
    main()
