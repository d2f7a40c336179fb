"""The owner's endpoint pages: list and add endpoints, edit one."""
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from apps.webhooks import selectors, services
from apps.webhooks.forms import WebhookEndpointForm


@login_required
def endpoint_list(request: HttpRequest) -> HttpResponse:
    form = WebhookEndpointForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        services.webhook_endpoint_create(owner=request.user, **form.cleaned_data)
        messages.success(request, "Endpoint added. Use its secret to verify each delivery's signature.")
        return redirect("webhooks:list")
    endpoints = selectors.webhook_endpoints_of(user=request.user)
    return render(request, "webhooks/list.html", {"form": form, "endpoints": endpoints})


@login_required
def endpoint_edit(request: HttpRequest, endpoint_id: int) -> HttpResponse:
    endpoint = selectors.webhook_endpoints_of(user=request.user).filter(id=endpoint_id).first()
    if endpoint is None:
        raise Http404("No such endpoint of yours.")
    form = WebhookEndpointForm(request.POST or None, instance=endpoint)
    if request.method == "POST" and form.is_valid():
        services.webhook_endpoint_update(endpoint=endpoint, **form.cleaned_data)
        messages.success(request, "Endpoint saved.")
        return redirect("webhooks:list")
    return render(request, "webhooks/edit.html", {"form": form, "endpoint": endpoint})
