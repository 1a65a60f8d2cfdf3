"""The demo's pages: a form that enqueues a pipeline, and the JSON its page polls."""

from __future__ import annotations

import uuid
from typing import Any

from django import forms
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET

from jobqueue.exceptions import InvalidJob
from jobqueue.models import Job, JobStatus

from .jobs import FINAL_TOPIC, TOPICS
from .text import MAX_TEXT_LENGTH

#: Most jobs of one pipeline the status view returns (a guard against a runaway chain).
MAX_PIPELINE_JOBS = 50

SAMPLE_TEXT = (
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age "
    "of foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the season "
    "of Light, it was the season of Darkness, it was the spring of hope, it was the winter of despair."
)


class PipelineForm(forms.Form):
    title = forms.CharField(max_length=100, required=False)
    text = forms.CharField(
        max_length=MAX_TEXT_LENGTH,
        widget=forms.Textarea(attrs={"rows": 8, "cols": 80}),
        help_text=f"Up to {MAX_TEXT_LENGTH:,} characters.",
    )
    priority = forms.IntegerField(
        min_value=-100, max_value=100, initial=0, help_text="-100..100; higher runs first."
    )


def pipeline_jobs(root: Job) -> list[Job]:
    """``root`` and every job chained from it (following ``children``), oldest first."""
    jobs = [root]
    level = [root.pk]
    while level and len(jobs) < MAX_PIPELINE_JOBS:
        room = MAX_PIPELINE_JOBS - len(jobs)
        children = list(Job.objects.filter(parent__in=level).order_by("created_at")[:room])
        jobs.extend(children)
        level = [child.pk for child in children]
    return jobs


def job_data(job: Job) -> dict[str, Any]:
    return {
        "id": str(job.pk),
        "topic": job.topic_id,
        "status": job.status,
        "status_label": job.get_status_display(),
        "progress": job.progress,
        "message": job.progress_message,
        "stage": job.stage,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "error": job.error[:500],
        "position": job.position_in_queue if job.status == JobStatus.QUEUED else None,
        "duration": round(job.duration.total_seconds(), 2) if job.duration else None,
        "admin_url": reverse("admin:jobqueue_job_change", args=[job.pk]) if _job_admin_registered() else None,
    }


def pipeline_state(root: Job) -> dict[str, Any]:
    """What the page shows: every job of the pipeline and, once it is done, the report."""
    jobs = pipeline_jobs(root)
    final = next((j for j in jobs if j.topic_id == FINAL_TOPIC and j.status == JobStatus.SUCCEEDED), None)
    failed = any(j.status in (JobStatus.FAILED, JobStatus.CANCELLED) for j in jobs)
    return {
        "id": str(root.pk),
        "topics": list(TOPICS),
        "jobs": [job_data(j) for j in jobs],
        "done": final is not None,
        "failed": failed,
        "report": final.result if final is not None else None,
    }


def index(request: HttpRequest) -> HttpResponse:
    form = PipelineForm(request.POST or None, initial={"text": SAMPLE_TEXT, "title": "A Tale of Two Cities"})
    if request.method == "POST" and form.is_valid():
        try:
            job = Job.objects.enqueue(
                "ingest",
                {"title": form.cleaned_data["title"], "text": form.cleaned_data["text"]},
                priority=form.cleaned_data["priority"],
            )
        except InvalidJob as exc:
            form.add_error(None, str(exc))
        else:
            return redirect(f"{reverse('pipeline:index')}?job={job.pk}")
    selected = None
    job_param = request.GET.get("job")
    if job_param:
        try:
            selected = Job.objects.filter(pk=uuid.UUID(job_param)).first()
        except ValueError:
            selected = None
    recent = Job.objects.filter(topic_id="ingest", parent__isnull=True).order_by("-created_at")[:10]
    context = {
        "form": form,
        "selected": selected,
        "state": pipeline_state(selected) if selected else None,
        "recent": recent,
        "job_not_found": bool(job_param) and selected is None,
    }
    return render(request, "pipeline/index.html", context)


@require_GET
def status(request: HttpRequest, job_id: uuid.UUID) -> JsonResponse:
    root = get_object_or_404(Job, pk=job_id)
    return JsonResponse(pipeline_state(root))


def _job_admin_registered() -> bool:
    from django.contrib import admin

    return admin.site.is_registered(Job)
