"""config = "repo": the pipeline is .lightci/ at the commit being built (SPEC section 9)."""

from __future__ import annotations

import pytest

from lightci import jobs
from lightci.errors import UserError
from tests.gitrepos import Repo

PIPELINE_A = {
    ".lightci/job.toml": 'stages = ["build"]\ntimeout = 77\n[env]\nGREETING = "one"\n',
    ".lightci/build.sh": '#!/bin/sh\necho "A says $GREETING on $LIGHTCI_BRANCH"\n',
}
PIPELINE_B = {
    ".lightci/job.toml": (
        'stages = ["lint", "build"]\n[params]\nlevel = "strict"\n[env]\nGREETING = "two"\n'
    ),
    ".lightci/lint.sh": '#!/bin/sh\necho "lint B at level $LEVEL"\n',
    ".lightci/build.sh": '#!/bin/sh\necho "B says $GREETING"\n',
}


def test_each_commit_builds_with_its_own_pipeline_inside_the_sandbox(home, tmp_path):
    home.configure(sandbox="auto")  # the scripts are read inside bwrap where it works
    repo = Repo(tmp_path)
    first = repo.commit(PIPELINE_A)
    second = repo.commit(PIPELINE_B)
    home.job("app", f'repo = "{repo.bare}"\nconfig = "repo"\n[env]\nFROM_SERVER = "yes"\n')
    home.start_worker()
    a = home.trigger("app", "--branch", "main", "--commit", first)
    b = home.trigger("app", "--branch", "main", "--commit", second)
    rows = home.wait_for([a, b])
    assert [r["status"] for r in rows] == ["success", "success"], home.log(a) + home.log(b)
    log_a, log_b = home.log(a), home.log(b)
    assert "A says one on main" in log_a and "lint" not in log_a
    assert "lint B at level strict" in log_b and "B says two" in log_b
    assert rows[0]["timeout"] == 77 and rows[1]["timeout"] == 3600
    assert f"pipeline from .lightci/ at {second[:12]}: stages lint, build" in log_b


def test_a_broken_pipeline_fails_its_branch_while_main_builds(home, tmp_path):
    repo = Repo(tmp_path)
    repo.commit(PIPELINE_A)
    broken = repo.commit({".lightci/job.toml": 'stages = "build"\n'}, branch="broken")
    home.job("app", f'repo = "{repo.bare}"\nconfig = "repo"\nkey = "{{branch}}"\n')
    home.start_worker()
    bad = home.trigger("app", "--branch", "broken")
    good = home.trigger("app", "--branch", "main")
    bad_row, good_row = home.wait_for([bad, good])
    assert good_row["status"] == "success", home.log(good)
    assert bad_row["status"] == "failed"
    assert bad_row["error"] == (
        f"commit {broken[:12]}: .lightci/job.toml: stages: must be a list of stage names, "
        "got 'build'"
    )
    assert bad_row["error"] in home.log(bad)
    missing = repo.commit({".lightci/job.toml": None, ".lightci/build.sh": None}, branch="broken")
    gone = home.trigger("app", "--branch", "broken")
    row = home.wait_for([gone])[0]
    assert row["status"] == "failed" and row["error"].startswith(f"commit {missing[:12]}: no ")


def test_an_in_repo_file_cannot_grant_itself_a_secret(home, tmp_path):
    home.path.joinpath("secrets.env").write_text("DEPLOY_KEY=granted-value\nOTHER=never\n")
    home.path.joinpath("secrets.env").chmod(0o600)
    repo = Repo(tmp_path)
    marker = tmp_path / "ran"
    script = f'#!/bin/sh\necho "key:$DEPLOY_KEY other:${{OTHER:-none}}"; touch {marker}\n'
    repo.commit({".lightci/build.sh": script})
    greedy = repo.commit({".lightci/job.toml": 'secrets = ["OTHER"]\n'}, branch="greedy")
    home.job("app", f'repo = "{repo.bare}"\nconfig = "repo"\nsecrets = ["DEPLOY_KEY"]\n')
    home.start_worker()
    ok = home.trigger("app", "--branch", "main")
    assert home.wait_for([ok])[0]["status"] == "success", home.log(ok)
    assert "key:*** other:none" in home.log(ok)
    marker.unlink()
    asks = home.trigger("app", "--branch", "greedy")
    row = home.wait_for([asks])[0]
    assert row["status"] == "failed" and not marker.exists()
    assert row["error"] == (
        f"commit {greedy[:12]}: .lightci/job.toml: secrets: only the server's job.toml may "
        "set it (jobs/app/job.toml), never the repository"
    )


def test_config_repo_needs_a_repo_and_the_server_side_needs_no_scripts(tmp_path):
    job_dir = tmp_path / "app"
    job_dir.mkdir()
    job_dir.joinpath("job.toml").write_text('config = "repo"\n')
    with pytest.raises(UserError, match='config: must be "server", or "repo" with a repo'):
        jobs.parse("app", job_dir, tmp_path / "_shared")
    job_dir.joinpath("job.toml").write_text('config = "repo"\nrepo = "/x.git"\n')
    assert jobs.parse("app", job_dir, tmp_path / "_shared").config == "repo"


def test_an_in_repo_deploy_needs_a_deploy_table_on_the_server(home, tmp_path):
    repo = Repo(tmp_path)
    sha = repo.commit(
        {".lightci/job.toml": "[deploy]\nport = 3000\n", ".lightci/build.sh": "#!/bin/sh\n"}
    )
    home.job("app", f'repo = "{repo.bare}"\nconfig = "repo"\n')
    home.start_worker()
    build = home.trigger("app", "--branch", "main")
    row = home.wait_for([build])[0]
    assert row["status"] == "failed"
    assert row["error"].startswith(f"commit {sha[:12]}: .lightci/job.toml: deploy: the server's")


def test_the_commit_s_after_stages_and_artifacts_are_the_ones_that_run(home, tmp_path):
    """SPEC 9: the in-repo file defines `after` and `artifacts` too, not only the stages."""
    repo = Repo(tmp_path)
    repo.commit(
        {
            ".lightci/job.toml": 'stages = ["build"]\nafter = ["post"]\nartifacts = ["*.art"]\n',
            ".lightci/build.sh": "#!/bin/sh\necho made > out.art\necho srv > out.srv\n",
            ".lightci/post.sh": '#!/bin/sh\necho "post ran: $LIGHTCI_RESULT"\n',
        }
    )
    server = 'after = ["srvafter"]\nartifacts = ["*.srv"]\n'
    home.job("app", f'repo = "{repo.bare}"\nconfig = "repo"\n{server}', srvafter="echo srv-after")
    home.start_worker()
    build = home.trigger("app", "--branch", "main")
    row = home.wait_for([build])[0]
    assert row["status"] == "success", home.log(build)
    assert "post ran: success" in home.log(build) and "srv-after" not in home.log(build)
    kept = home.path / "builds" / "app" / "1" / "artifacts"
    assert sorted(p.name for p in kept.iterdir()) == ["out.art"]


def test_an_in_repo_deploy_may_not_choose_where_its_image_is_pushed(home, tmp_path):
    repo = Repo(tmp_path)
    sha = repo.commit(
        {
            ".lightci/job.toml": '[deploy]\nport = 3000\npush = "registry.example.com/x"\n',
            ".lightci/build.sh": "#!/bin/sh\n",
        }
    )
    home.job("app", f'repo = "{repo.bare}"\nconfig = "repo"\n[deploy]\nport = 8080\n')
    home.start_worker()
    build = home.trigger("app", "--branch", "main")
    row = home.wait_for([build])[0]
    assert row["status"] == "failed"
    assert row["error"] == (
        f"commit {sha[:12]}: .lightci/job.toml: deploy.push: only the server's job.toml may "
        "set it (jobs/app/job.toml), never the repository"
    )


@pytest.mark.parametrize("after", ["../../../evil", "x/y", ".."])
def test_an_after_stage_is_a_name_never_a_path(tmp_path, after):
    job_dir = tmp_path / "app"
    job_dir.mkdir()
    job_dir.joinpath("build.sh").write_text("true\n")
    job_dir.joinpath("job.toml").write_text(f'after = ["{after}"]\n')
    if after == "..":  # a name of dots is a file ...sh in the job's directory: no way out
        assert jobs.parse("app", job_dir, tmp_path / "_shared").after == [".."]
        return
    with pytest.raises(UserError, match=f"after: '{after}' is not a valid stage name"):
        jobs.parse("app", job_dir, tmp_path / "_shared")


def test_a_pipeline_that_points_outside_the_repository_is_refused_by_its_path(home, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "build.sh").write_text("#!/bin/sh\necho outside\n")
    repo = Repo(tmp_path)
    (repo.work / ".lightci").symlink_to(outside)  # a directory out of the repository
    sha = repo.commit({})
    home.job("app", f'repo = "{repo.bare}"\nconfig = "repo"\n')
    home.start_worker()
    row = home.wait_for([home.trigger("app", "--branch", "main")])[0]
    assert row["status"] == "failed"
    assert row["error"] == f"commit {sha[:12]}: .lightci points outside the repository"
