"""core.training_progress: the files training writes for the server and arena to read."""

from __future__ import annotations

import json
import subprocess
import sys

from core.training_progress import describe, progress_path, read_progress, write_progress


def test_written_records_read_back_newest_first(tmp_path):
    write_progress(progress_path(tmp_path, "sft"), name="sft", version=1, state="registered", ref="sft@1")
    write_progress(progress_path(tmp_path, "dpo"), name="dpo", version=1, state="training", step=3, max_steps=18,
                   loss=0.9, eta_s=30.0)
    jobs = read_progress(tmp_path)
    assert [j["name"] for j in jobs] == ["dpo", "sft"] and jobs[0]["state"] == "training"
    assert describe(jobs[0]) == "dpo@1: training, step 3/18, loss 0.90, about 1 min left"
    assert "registered" in describe(jobs[1])
    assert read_progress(tmp_path / "nowhere") == []


def test_a_job_whose_process_died_reads_stopped(tmp_path):
    # a record written by a process that has exited since, as a killed run leaves it
    code = ("import sys; from core.training_progress import write_progress, progress_path; "
            "write_progress(progress_path(sys.argv[1], 'sft'), name='sft', version=2, state='training', step=5, "
            "max_steps=64)")
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True)
    (job,) = read_progress(tmp_path)
    assert job["state"] == "stopped" and "stopped before it finished" in describe(job)
    assert json.loads(progress_path(tmp_path, "sft").read_text())["state"] == "training"  # the file is not edited


def test_a_damaged_file_is_skipped(tmp_path):
    path = progress_path(tmp_path, "sft")
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    assert read_progress(tmp_path) == []


def test_a_job_that_ends_without_registering_says_stopped_or_failed(tmp_path):
    from training.jobs import TrainingInterrupted
    from training.metrics import ProgressReporter

    reporter = ProgressReporter(progress_path(tmp_path, "dpo"), "dpo", 3, "dpo")
    reporter.ended(TrainingInterrupted("interrupted at step 4"))  # Ctrl-C: a checkpoint, the next run resumes
    assert read_progress(tmp_path)[0]["state"] == "stopped"
    reporter.ended(RuntimeError("CUDA out of memory"))
    (job,) = read_progress(tmp_path)
    assert job["state"] == "failed" and job["error"] == "RuntimeError: CUDA out of memory"
    assert describe(job) == "dpo@3: training failed (RuntimeError: CUDA out of memory)"
