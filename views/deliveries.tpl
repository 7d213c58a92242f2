% rebase('base.tpl')
% import json
<div class="page-head">
  <div>
    <p class="crumbs"><a href="/">Dashboard</a> /</p>
    <h1>Deployments{{' of ' + job_name if job_name else ''}}</h1>
  </div>
</div>
% include('bumps.tpl', bumps=bumps)
% if deployments:
<section>
  <h2>Docker deployments</h2>
  <table class="history">
    <thead><tr><th>Job</th><th>State</th><th>Image</th><th>Trigger</th><th>Started</th></tr></thead>
    <tbody>
    % for d in deployments:
    <tr><td><a href="/jobs/{{d.job}}">{{d.job}}</a></td><td>{{d.state}}</td><td><code>{{d.image}}</code></td><td>{{d.trigger}}</td><td>{{ago(d.created_at)}}</td></tr>
    % end
    </tbody>
  </table>
</section>
% end
<p class="muted small">Roll a [gitops] job back with <code>lightci rollback JOB</code> (or <code>--to BUMP</code> to re-apply an earlier bump), or <code>POST /api/jobs/JOB/rollback</code> with <code>{"to": BUMP}</code>.</p>
