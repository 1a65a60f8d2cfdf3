"""Uses no helper: reads input.json and writes output.json itself."""

import json
import os

with open("input.json") as fh:
    data = json.load(fh)
result = {
    "got": data,
    "cwd": os.getcwd(),
    "job_id": os.environ["JOBQUEUE_JOB_ID"],
    "topic": os.environ["JOBQUEUE_TOPIC"],
    "attempt": os.environ["JOBQUEUE_ATTEMPT"],
    "marker": open("marker").read() if os.path.exists("marker") else None,
}
with open("output.json", "w") as fh:
    json.dump(result, fh)
