// Renders the coordinator's OpenAPI document with the embedded ReDoc bundle (served from /redoc/, api.md §4.4).
// Loaded by /redoc as a module, so the page needs no inline script; telemetry is off and nothing leaves the origin.
import { init } from "./redoc.standalone.js";

init("/openapi.json", { disableTelemetry: true }, document.getElementById("redoc-container"));
