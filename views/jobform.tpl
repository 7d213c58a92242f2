% rebase('base.tpl')
% placed = field in ('name', 'toml', 'detect') or field.startswith('script')
<div class="page-head">
  <div>
    <p class="crumbs"><a href="/">Dashboard</a> /{{!(' <a href="/jobs/%s">%s</a> /' % (quote(job_name), job_name)) if editing else ''}}</p>
    <h1>{{title}}</h1>
  </div>
</div>
% if error and not placed:
<p class="flash error" role="alert" id="form-error">{{error}}</p>
% end
% if notes:
<section class="card" id="detect-notes">
  <ul>
  % for note in notes:
    <li>{{note}}</li>
  % end
  </ul>
  <p class="muted small">Nothing runs until you save. Edit the proposal as you like.</p>
</section>
% end
<form method="post" action="{{'/jobs/%s/edit' % quote(job_name) if editing else '/jobs/new'}}" class="stack" id="job-form">
  <input type="hidden" name="csrf" value="{{csrf}}">
  %# Enter in a field submits with the form's first button: saving, never a new proposal
  %# that would throw the edits away. Out of sight and out of the tab order.
  <button type="submit" name="action" value="save" class="default-action" tabindex="-1" aria-hidden="true">Save job</button>
  % if not editing:
  <label>Name <input name="name" value="{{job_name}}" autocomplete="off" spellcheck="false" placeholder="my-app"></label>
  % if field == 'name':
  <p class="error-text" role="alert" id="error-name">{{error}}</p>
  % end
  <fieldset class="card">
    <legend>Propose from a repository</legend>
    <label>Repository URL <input name="repo" value="{{detect_values['repo']}}" autocomplete="off" spellcheck="false" placeholder="https://git.example.com/org/app.git"></label>
    <label>Branch <input name="branch" value="{{detect_values['branch']}}" autocomplete="off" placeholder="main"></label>
    <button type="submit" name="action" value="detect" id="detect-button">Propose job.toml and scripts</button>
    % if field == 'detect':
    <p class="error-text" role="alert" id="error-detect">{{error}}</p>
    % end
  </fieldset>
  % end
  <label>job.toml <textarea name="toml" rows="16" spellcheck="false" id="toml">{{toml}}</textarea></label>
  % if field == 'toml':
  <p class="error-text" role="alert" id="error-toml">{{error}}</p>
  % end
  <h2>Stage scripts</h2>
  <p class="muted small">Each stage NAME runs NAME.sh. Clear a script's name and text to remove it.</p>
  % if field == 'script':
  <p class="error-text" role="alert" id="error-script">{{error}}</p>
  % end
  % for i, (script, body) in enumerate(list(scripts.items()) + [('', '')]):
  <div class="script-row">
    <label>Script <input name="script_name.{{i}}" value="{{script}}" placeholder="NAME.sh" autocomplete="off" spellcheck="false"></label>
    <textarea name="script_body.{{i}}" rows="8" spellcheck="false" aria-label="text of {{script or 'a new script'}}">{{body}}</textarea>
    % if script and field == 'script:' + script:
    <p class="error-text" role="alert">{{error}}</p>
    % end
  </div>
  % end
  <button type="submit" class="primary" name="action" value="save" id="save-button">Save job</button>
</form>
% if editing:
<p><a class="button" href="/jobs/{{quote(job_name)}}/delete" id="delete-link">Delete this job…</a></p>
% end
