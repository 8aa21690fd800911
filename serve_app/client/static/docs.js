// Starts Swagger UI on /docs: FastAPI's own page does this in an inline script, which our CSP forbids.
/* global SwaggerUIBundle */
if (typeof SwaggerUIBundle === "undefined") {
  document.getElementById("swagger-ui").textContent =
    "Swagger UI could not be loaded from cdn.jsdelivr.net. The API description is at /openapi.json.";
} else {
  SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    layout: "BaseLayout",
    deepLinking: true,
    showExtensions: true,
    showCommonExtensions: true,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
  });
}
