% rebase('base.tpl')
<div class="page-head">
  <div>
    <p class="crumbs"><a href="/">Dashboard</a> / <a href="/jobs/{{quote(job_name)}}">{{job_name}}</a> /</p>
    <h1>Delete {{job_name}}?</h1>
  </div>
</div>
% if error:
<p class="flash error" role="alert" id="form-error">{{error}}</p>
% end
<section class="card">
  <p>This removes the job's files, all its builds and logs, its caches and git mirror,
  its containers, and its live deployment with its route under <code>/apps/{{job_name}}/</code>.
  It cannot be undone.</p>
  <form method="post" action="/jobs/{{quote(job_name)}}/delete" class="stack" id="delete-form">
    <input type="hidden" name="csrf" value="{{csrf}}">
    <label>Type the job's name to confirm <input name="confirm" autocomplete="off" spellcheck="false"></label>
    <label><input type="checkbox" name="cancel" value="1"> Cancel a running build of it first</label>
    <button type="submit" class="primary" id="confirm-delete">Delete {{job_name}}</button>
  </form>
</section>
