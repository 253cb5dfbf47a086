import js from "@eslint/js";
import globals from "globals";

export default [
  { ignores: ["**/node_modules/**", "sdk/types/**", "sdk/example/dist/**", "app/**"] },
  js.configs.recommended,
  {
    files: ["sdk/**/*.js"],
    languageOptions: {
      ecmaVersion: 2022,
      sourceType: "module",
      globals: { ...globals.browser, ...globals.worker, ...globals.node },
    },
    rules: {
      "no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_", caughtErrors: "none" }],
      eqeqeq: ["error", "always", { null: "ignore" }],
      "prefer-const": "error",
    },
  },
];
