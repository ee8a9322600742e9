// Starts Swagger UI on /docs. Kept out of the HTML so that a Content-Security-Policy
// without 'unsafe-inline' scripts can be used; the spec URL comes from a data attribute.
"use strict";

(function startSwaggerUi() {
  const root = document.getElementById("swagger-ui");
  window.ui = window.SwaggerUIBundle({
    url: root.dataset.openapiUrl,
    domNode: root,
    layout: "BaseLayout",
    deepLinking: true,
    showExtensions: true,
    showCommonExtensions: true,
    displayRequestDuration: true,
    // The default online validator badge would load an image from validator.swagger.io.
    validatorUrl: null,
    presets: [window.SwaggerUIBundle.presets.apis, window.SwaggerUIBundle.SwaggerUIStandalonePreset],
  });
})();
