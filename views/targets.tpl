% # The dashboard's flag for jobs below a delivery target: include with below ({job: [sentences]}).
% if below:
<section class="card" id="below-target">
  <h2>Below target</h2>
  % for name, misses in below.items():
  <p class="flash error" role="alert"><a href="/jobs/{{name}}">{{name}}</a>: {{'; '.join(misses)}} (<a href="/metrics-page">metrics</a>)</p>
  % end
</section>
% end
