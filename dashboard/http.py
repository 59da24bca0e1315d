"""Typed requests for views: ``request.htmx`` exists once HtmxMiddleware ran."""

from django.http import HttpRequest
from django_htmx.middleware import HtmxDetails


class HtmxHttpRequest(HttpRequest):
    htmx: HtmxDetails
