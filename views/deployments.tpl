% # Docker deployments. On a job page: include with job_name and rows (the newest deployments);
% # on the dashboard: job_name=None and sick, the live containers that keep failing their checks.
% if job_name:
%   if rows:
<section class="deployments">
  <h2>Deployments</h2>
  <div class="scroll">
  <table class="history">
    <thead><tr><th>State</th><th>Image</th><th>Slot</th><th>Trigger</th><th>Started</th><th>Switched</th><th>Error</th></tr></thead>
    <tbody>
    % for d in rows:
    % badge = {'live': 'success', 'checking': 'deploying', 'draining': 'running', 'failed': 'failed'}.get(d.state, 'cancelled')
    % badge = 'failed' if d.state == 'live' and d.health == 'unhealthy' else badge
    <tr>
      <td><span class="badge {{badge}}">{{d.state}}{{' (unhealthy)' if d.state == 'live' and d.health == 'unhealthy' else ''}}</span></td>
      <td><code title="{{d.image_id}}">{{d.image}}</code></td>
      <td>{{d.slot}}</td>
      <td>{{d.trigger}}</td>
      <td title="{{stamp(d.created_at)}}">{{ago(d.created_at)}}</td>
      <td>{{ago(d.switched_at) if d.switched_at else ''}}</td>
      <td class="error-text small">{{(d.error or d.last_error).splitlines()[0] if (d.error or d.last_error) else ''}}</td>
    </tr>
    % end
    </tbody>
  </table>
  </div>
  <p class="muted small">Live at <a href="/apps/{{job_name}}/">/apps/{{job_name}}/</a> · roll back with <code>lightci rollback {{job_name}}</code> or <code>POST /api/jobs/{{job_name}}/rollback</code></p>
</section>
%   end
% else:
%   if sick:
<section class="card deployments">
  <h2>Unhealthy deployments</h2>
  % for d in sick:
  <p class="flash error" role="alert"><a href="/jobs/{{d.job}}">{{d.job}}</a>: {{d.image}} in {{d.slot}} fails its health check: {{d.last_error}}</p>
  % end
</section>
%   end
% end
