"""`fizz work`: runs each due task at its time, exactly once, until it is stopped.

Four threads, each with one job, its own connection where it needs one, and nothing of the
others but the job book (book.py), which they share:

- the dispatcher (the calling thread, dispatcher.py) LISTENs for new tasks, keeps a timer
  for the next due time, and claims tasks `ahead` of it, in batches;
- the recorder (recorder.py) completes each job in the database, fenced by its claim,
  shortly before its line is due: "record, then print";
- the printer (printer.py) sleeps to the exact time of each recorded job and prints it;
- the keeper (keeper.py) renews the claims the worker holds, hands back its orphans, and
  reaps other holders' claims under the rule of fizzbuzz_cli.reaper.

Never twice: a line is printed only after its run was recorded under the claim's fence, so
whatever stops, freezes or cuts off a worker or PostgreSQL, a task that runs elsewhere was
not recorded here, and is not printed here. The price: a worker killed outright between a
record and its line (a few milliseconds) loses that line.
"""

from fizzbuzz_cli.worker.main import Worker

__all__ = ["Worker"]
