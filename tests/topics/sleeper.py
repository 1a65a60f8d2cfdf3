"""Starts a child that sleeps, writes both pids to data["pidfile"], then sleeps itself."""

import json
import os
import subprocess
import time

with open("input.json") as fh:
    data = json.load(fh)
child = subprocess.Popen(["sleep", "60"])
with open(data["pidfile"], "w") as fh:
    fh.write(f"{os.getpid()} {child.pid}")
print("started", flush=True)
time.sleep(60)
