"""The demo's sandbox: what `--demo` needs besides the daemon, and nothing
the daemon needs.

    demo.py             `python adws/coordinator.py --demo`: builds a throw-away
                        repository, starts the fake GitHub, runs the real daemon
                        as a process against it and shows what happened
    fakegithub.py       a GitHub REST server on 127.0.0.1 that the real `gh`
                        talks to (the tests and the benchmark use it too)
    scripted_worker.py  a stand-in for `claude -p` that prints stream-json and
                        commits, blocks, crashes or hangs as its script says

The daemon never imports this package: `--demo` hands over to demo.py.
"""
