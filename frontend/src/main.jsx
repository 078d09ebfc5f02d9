import { render } from "preact";
import { App } from "./App.jsx";
import { connect } from "./connection.js";

const { client, spec } = connect();
render(<App client={client} spec={spec} />, document.getElementById("app"));
