"""The paper: its experiments as data, and everything that turns them into trained runs, tables and figures.

- ``grids``: protocols, teachers, every table's cells and the paper's numbers.
- ``settings``: ``Settings``, how much to train (profiles under ``profiles/``).
- ``suite``: a cell at a seed -> its ``RunConfig`` and run id; a suite's distinct runs, teachers first.
- ``schedule``: which runs train together (cohorts, concurrent sets) and ``run_cells``, which trains them.
- ``plan``: the groups a profile trains and their estimated GPU time, from measured rates.
- ``campaign`` and ``packs``: GPU windows: train in value order until a deadline, move runs in and out as packs.
- ``workers``: several processes (GPUs, machines) drain one suite together (``python -m atlib work``).
- ``report``: tables beside the paper's numbers, figures, REPORT.md, from the stored records only.
- ``demo``: the CPU demo (profile ``cpu-demo``).
- ``pipeline``: the notebook sequence run with papermill (``python -m atlib reproduce``).

It uses ``atlib.training`` (and the method and data below it); only the CLI and the notebooks use it.
"""
