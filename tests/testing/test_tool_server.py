"""The tool server runs a script as ``python SCRIPT ARGS`` would: its argv, ``__main__``, its
folder first on ``sys.path``, its own stdout / stderr, its exit status, a traceback and 1 for an
uncaught error, and a timeout that kills the script with what it started."""
import json
import os
import subprocess
import sys
import textwrap

from tests.conftest import REPO

SCRIPT = textwrap.dedent('''
    import os, subprocess, sys, time
    if __name__ == '__main__':
        print('argv', sys.argv[1:], 'path0', sys.path[0] == os.path.dirname(__file__))
        mode = sys.argv[1]
        if mode == 'exit':
            print('to stderr', file=sys.stderr)
            sys.exit(3)
        if mode == 'message':
            sys.exit('a message')
        if mode == 'raise':
            raise KeyError('state_dict')
        if mode == 'hang':  # a stage it started must die with it
            child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])
            open(sys.argv[2], 'w').write(str(child.pid))
            time.sleep(60)
''')


def _serve(jobs, timeout=60):
    lines = '\n'.join(json.dumps(job) for job in jobs) + '\n'
    done = subprocess.run([sys.executable, '-m', 'mmrecprune.testing.tool_server', '--jobs', '2',
                           '--timeout', str(timeout)], input=lines, text=True, cwd=REPO,
                          capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return {r['id']: r['returncode'] for r in map(json.loads, done.stdout.splitlines())}


def test_runs_scripts_as_the_interpreter_does(tmp_path):
    script = tmp_path / 'tool.py'
    script.write_text(SCRIPT)
    pid_file = tmp_path / 'child.pid'
    jobs = [dict(id=mode, tool=str(script), argv=[mode, str(pid_file)],
                 stdout=str(tmp_path / f'{mode}.out'), stderr=str(tmp_path / f'{mode}.err'))
            for mode in ('ok', 'exit', 'message', 'raise')]
    codes = _serve(jobs)
    assert codes['ok'] == 0 and codes['exit'] == 3 and codes['message'] == 1 \
        and codes['raise'] == 1, codes
    out = (tmp_path / 'ok.out').read_text()
    assert out.startswith(f"argv ['ok', '{pid_file}'] path0 True"), out
    assert (tmp_path / 'exit.err').read_text() == 'to stderr\n'
    assert (tmp_path / 'message.err').read_text() == 'a message\n'
    err = (tmp_path / 'raise.err').read_text()
    assert err.startswith('Traceback') and "KeyError: 'state_dict'" in err, err


def test_a_timeout_kills_the_tool_and_what_it_started(tmp_path):
    script = tmp_path / 'tool.py'
    script.write_text(SCRIPT)
    pid_file = tmp_path / 'child.pid'
    codes = _serve([dict(id='hang', tool=str(script), argv=['hang', str(pid_file)],
                         stdout=str(tmp_path / 'o'), stderr=str(tmp_path / 'e'))], timeout=5)
    assert codes == dict(hang=-9)
    child = int(pid_file.read_text())
    for _ in range(100):  # the grandchild is killed too (reaped by init soon after)
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        if open(f'/proc/{child}/stat').read().split()[2] == 'Z':
            break
        __import__('time').sleep(0.05)
    else:
        raise AssertionError(f'the stage {child} the tool started still runs')
