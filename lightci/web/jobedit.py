"""Jobs from the API and the setup pages (SPEC section 9): create, edit, delete, detect."""

from __future__ import annotations

from urllib.parse import urlencode

import bottle
from bottle import request, response

from lightci import detect, jobfiles, jobs, removal
from lightci.config import settings
from lightci.errors import UserError
from lightci.web import auth
from lightci.web.answers import body_json, json_answer
from lightci.web.api import job_dict
from lightci.web.render import page


def api_create():
    auth.require_write()
    data = body_json(allowed=("name", "toml", "scripts"))
    job = jobfiles.create(settings(), data.get("name"), data.get("toml"), data.get("scripts"))
    return json_answer(201, job_dict(job))


def api_update(name: str):
    auth.require_write()
    data = body_json(allowed=("toml", "scripts"))
    return job_dict(jobfiles.update(settings(), name, data.get("toml"), data.get("scripts")))


def api_delete(name: str):
    auth.require_write()
    cancel = request.query.get("cancel", "") in ("1", "true", "yes")
    return removal.delete(name, cancel=cancel)


def api_detect():
    auth.require_write()
    data = body_json(allowed=("repo", "branch"))
    return detect.propose(settings(), data.get("repo"), data.get("branch"))


# -- pages ---------------------------------------------------------------------------


def _writer() -> None:
    """The setup pages change jobs: a server with a token sends a person to log in first."""
    auth.html_read()
    if not auth.can_write():
        raise bottle.redirect("/login?" + urlencode({"next": request.fullpath}), 303)


def _form_files() -> tuple[str, dict[str, str]]:
    """job.toml and the scripts of the posted form: rows script_name.N / script_body.N."""
    forms = request.forms
    scripts: dict[str, str] = {}
    for key in forms:
        if not key.startswith("script_name."):
            continue
        row = key.split(".", 1)[1]
        script = forms.getunicode(key, default="").strip()
        body = forms.getunicode(f"script_body.{row}", default="")
        if not script and not body.strip():
            continue  # an empty row, or a script removed by clearing it
        scripts[script] = body
    return forms.getunicode("toml", default=""), scripts


def _form(title: str, name: str, toml: str, scripts: dict[str, str], **more):
    return page(
        "jobform.tpl",
        title=title,
        job_name=name,
        toml=toml,
        scripts=scripts,
        editing=more.pop("editing", False),
        field=more.pop("field", ""),
        notes=more.pop("notes", []),
        detect_values=more.pop("detect_values", {"repo": "", "branch": ""}),
        **more,
    )


def new_job_page():
    _writer()
    return _form("New job", "", "", {"build.sh": "#!/bin/sh\nset -eu\n"})


def new_job_post():
    auth.form_checked()
    toml, scripts = _form_files()
    name = request.forms.getunicode("name", default="").strip()
    values = {
        "repo": request.forms.getunicode("repo", default="").strip(),
        "branch": request.forms.getunicode("branch", default="").strip(),
    }
    try:
        if request.forms.get("action") == "detect":
            proposal = detect.propose(settings(), values["repo"], values["branch"])
            return _form(
                "New job",
                name,
                proposal["toml"],
                proposal["scripts"],
                notes=[f"Detected: {proposal['kind']}", *proposal["notes"]],
                detect_values=values,
            )
        job = jobfiles.create(settings(), name, toml, scripts)
    except UserError as exc:
        response.status = exc.status
        field = getattr(exc, "field", "detect" if request.forms.get("action") == "detect" else "")
        return _form(
            "New job", name, toml, scripts, error=str(exc), field=field, detect_values=values
        )
    bottle.redirect(f"/jobs/{job.name}", 303)


def edit_job_page(name: str):
    _writer()
    files = jobfiles.current_files(settings(), name)
    toml = files.pop("job.toml")
    return _form(f"Edit {name}", name, toml, files, editing=True)


def edit_job_post(name: str):
    auth.form_checked()
    toml, scripts = _form_files()
    try:
        job = jobfiles.update(settings(), name, toml, scripts)
    except UserError as exc:
        if exc.status == 404:
            raise
        response.status = exc.status
        field = getattr(exc, "field", "")
        return _form(f"Edit {name}", name, toml, scripts, editing=True, error=str(exc), field=field)
    bottle.redirect(f"/jobs/{job.name}", 303)


def delete_job_page(name: str):
    _writer()
    jobfiles.existing_dir(settings(), name)
    return page("jobdelete.tpl", title=f"Delete {name}", job_name=name)


def delete_job_post(name: str):
    auth.form_checked()
    jobs.check_name(name)
    if request.forms.getunicode("confirm", default="") != name:
        response.status = 400
        return page(
            "jobdelete.tpl",
            title=f"Delete {name}",
            job_name=name,
            error=f"type the job's name, {name}, to confirm",
        )
    removal.delete(name, cancel=request.forms.get("cancel") == "1")
    bottle.redirect("/", 303)


def install(app: bottle.Bottle) -> None:
    for path, method, handler in (
        ("/api/jobs", "POST", api_create),
        ("/api/jobs/<name>", "PUT", api_update),
        ("/api/jobs/<name>", "DELETE", api_delete),
        ("/api/detect", "POST", api_detect),
        ("/jobs/new", "GET", new_job_page),
        ("/jobs/new", "POST", new_job_post),
        ("/jobs/<name>/edit", "GET", edit_job_page),
        ("/jobs/<name>/edit", "POST", edit_job_post),
        ("/jobs/<name>/delete", "GET", delete_job_page),
        ("/jobs/<name>/delete", "POST", delete_job_post),
    ):
        app.route(path, method, handler)
